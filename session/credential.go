package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// maxCredentialLen bounds what Verify looks at; a credential of a 1 KiB identity and a
// client identity of MaxClientIDLen fits.
const maxCredentialLen = 2048 + 128

// Claims is what a session credential proves.
type Claims struct {
	SID    string
	User   string
	Issued time.Time
	// Expires, if not zero, ends the session's right to attach or send: the identity's
	// token expired then.
	Expires time.Time
	// Grants are channel patterns the identity's token allows beyond the server's default
	// policy (for instance a JWT "channels" claim).
	Grants []string
	// CID is the client identity the session was negotiated with (see CheckClientID), ""
	// without one. It outlives the session: a client that negotiates a new session after
	// 4005 presents the same CID, and its upstream sequence continues, so that the dedupe
	// window (keyed by CID and user, see DedupeKey) recognises resent frames.
	CID string
}

// payload is the signed content of a credential.
type payload struct {
	SID     string   `json:"s"`
	Issued  int64    `json:"i"`
	Expires int64    `json:"e,omitempty"`
	User    string   `json:"u,omitempty"`
	Grants  []string `json:"g,omitempty"`
	CID     string   `json:"c,omitempty"`
}

// Signer issues and verifies session credentials with a shared secret, so that every node
// holding the secret verifies any credential without asking the node that issued it.
// A Signer is safe for concurrent use.
type Signer struct {
	key []byte

	// verified remembers credentials that passed, so that a session's every poll and
	// send does not pay the HMAC and the decoding again; cleared when full.
	mu       sync.Mutex
	verified map[string]Claims
}

// verifiedMax bounds Signer.verified (a few MiB at most).
const verifiedMax = 16384

// NewSigner returns a Signer for secret. An empty secret gets a random one, which is only
// right for a single node: credentials do not survive a restart or cross to another node.
func NewSigner(secret []byte) *Signer {
	if len(secret) == 0 {
		// A MAC key, not an id: 256 bits straight from the CSPRNG, where a UUID would
		// hold 122 and a fixed layout.
		secret = make([]byte, 32)
		rand.Read(secret)
	}
	return &Signer{key: append([]byte(nil), secret...), verified: make(map[string]Claims)}
}

// NewSessionID returns a random (version 4) UUID, base64url-encoded in 22 characters
// rather than the 36 of its text form: a session id is in every credential, in the
// channel "$session:<sid>" and in every log line of the session.
func NewSessionID() string {
	u := uuid.New()
	return base64.RawURLEncoding.EncodeToString(u[:])
}

// Strict: a credential has one spelling; the decoder would otherwise accept non-zero
// trailing bits in the last character.
var b64 = base64.RawURLEncoding.Strict()

// Issue returns the credential "v1.<payload>.<mac>" for c.
func (s *Signer) Issue(c Claims) string {
	p := payload{SID: c.SID, Issued: c.Issued.Unix(), User: c.User, Grants: c.Grants, CID: c.CID}
	if !c.Expires.IsZero() {
		p.Expires = c.Expires.Unix()
	}
	raw, _ := json.Marshal(p)
	signed := "v1." + b64.EncodeToString(raw)
	return signed + "." + b64.EncodeToString(s.mac(signed))
}

func (s *Signer) mac(signed string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// canonical reports whether s holds only base64url characters and dots. Go's base64
// decoder skips CR and LF, so without this check one credential would have many spellings.
func canonical(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Verify checks a credential's signature and returns its claims. Every failure is
// ErrSession: a client learns nothing about why, so forged, truncated and foreign
// credentials are indistinguishable.
func (s *Signer) Verify(cred string) (Claims, error) {
	s.mu.Lock()
	c, ok := s.verified[cred]
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := s.verify(cred)
	if err == nil {
		s.mu.Lock()
		if len(s.verified) >= verifiedMax {
			clear(s.verified)
		}
		s.verified[strings.Clone(cred)] = c
		s.mu.Unlock()
	}
	return c, err
}

func (s *Signer) verify(cred string) (Claims, error) {
	if len(cred) > maxCredentialLen || !strings.HasPrefix(cred, "v1.") || !canonical(cred) {
		return Claims{}, ErrSession
	}
	dot := strings.LastIndexByte(cred, '.')
	if dot <= len("v1.") {
		return Claims{}, ErrSession
	}
	signed, sig := cred[:dot], cred[dot+1:]
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(signed)) {
		return Claims{}, ErrSession
	}
	raw, err := b64.DecodeString(signed[len("v1."):])
	if err != nil {
		return Claims{}, ErrSession
	}
	var p payload
	if json.Unmarshal(raw, &p) != nil || len(p.SID) != 22 || (p.CID != "" && CheckClientID(p.CID) != nil) {
		return Claims{}, ErrSession
	}
	c := Claims{SID: p.SID, User: p.User, Issued: time.Unix(p.Issued, 0), Grants: p.Grants, CID: p.CID}
	if p.Expires != 0 {
		c.Expires = time.Unix(p.Expires, 0)
	}
	return c, nil
}
