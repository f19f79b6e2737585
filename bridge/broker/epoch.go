package broker

import "github.com/google/uuid"

const epochAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// EpochFrom maps the first 8 bytes of b to an epoch of 8 characters from [a-z0-9].
func EpochFrom(b []byte) string {
	var e [8]byte
	for i := range e {
		e[i] = epochAlphabet[int(b[i])%len(epochAlphabet)]
	}
	return string(e[:])
}

// NewEpoch returns a fresh epoch: 8 characters from [a-z0-9], from a random (version 4)
// UUID. Its first 8 bytes hold 60 random bits (the version takes 4), more than the 8
// characters keep.
func NewEpoch() string {
	id := uuid.New()
	return EpochFrom(id[:])
}
