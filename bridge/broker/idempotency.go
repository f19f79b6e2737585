package broker

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ferryrt/ferry/session"
)

// Idempotent publishing. A publish may carry an idempotency key (WithIdempotencyKey, the
// Idempotency-Key header of POST /api/publish, the id field of a publish stream entry).
// The broker records, atomically with the publish, the key and the position it got; a
// publish to the same channel with the same key within the window publishes nothing and
// answers that first position. Keys are scoped per channel: that is what lets Redis
// check a key in the same script, on the same shard, as the channel it names.
//
// The Redis broker also gives every publish without a key an id of its own, so that a
// publish go-redis sends again (after a read timeout, when the first attempt may still
// be queued in a stalled Redis) lands once and is answered with the first attempt's
// position.

// Bounds of idempotency keys.
const (
	// MaxIdempotencyKeyLen bounds an idempotency key, in bytes.
	MaxIdempotencyKeyLen = 128
	// DefaultIdempotencyTTL is how long a broker remembers an idempotency key after the
	// publish that first used it.
	DefaultIdempotencyTTL = 10 * time.Minute
)

// ErrIdempotencyConflict is returned (wrapped; match it with errors.Is) by a publish whose
// idempotency key was used within the window for the same channel with another payload.
// Nothing is published. POST /api/publish answers it with 422.
var ErrIdempotencyConflict = errors.New("bridge: idempotency key already used for another payload on this channel")

type idemKey struct{}

// WithIdempotencyKey returns a context that makes bridge.Server.Publish (and
// Broker.Publish) idempotent under key: within the broker's window (redis.Config.
// IdempotencyTTL, memory.Config.IdempotencyTTL), another publish with the same key to the same channel
// publishes nothing and returns the first one's position. key is 1 to
// MaxIdempotencyKeyLen printable ASCII characters (CheckIdempotencyKey); a publish with
// an invalid key fails with a bad-request error.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idemKey{}, key)
}

// IdempotencyKey returns the key of ctx (WithIdempotencyKey), checked, or "" for none.
func IdempotencyKey(ctx context.Context) (string, error) {
	key, ok := ctx.Value(idemKey{}).(string)
	if !ok {
		return "", nil
	}
	if err := CheckIdempotencyKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// CheckIdempotencyKey returns a bad-request error naming the problem unless key is 1 to
// MaxIdempotencyKeyLen printable ASCII characters (0x21 to 0x7e).
func CheckIdempotencyKey(key string) error {
	if len(key) == 0 || len(key) > MaxIdempotencyKeyLen {
		return session.Errorf(session.CodeBadRequest, "bad idempotency key: want 1-%d printable ASCII characters, got %d bytes", MaxIdempotencyKeyLen, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return session.Errorf(session.CodeBadRequest, "bad idempotency key: byte %#x at %d is not printable ASCII", key[i], i)
		}
	}
	return nil
}

// PayloadDigest identifies a publish's payload, so that a key reused for another payload
// is told apart from a retry. The Redis broker stores it: it must not change.
func PayloadDigest(data []byte, bin []byte) string {
	h := sha256.New()
	if data != nil {
		h.Write([]byte("d"))
		h.Write(data)
	} else {
		h.Write([]byte("b"))
		h.Write(bin)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// RetryID returns a fresh id for a publish without a key: a random UUID, without dashes.
func RetryID() string {
	id := uuid.New()
	return hex.EncodeToString(id[:])
}

// KeyTable is an in-process record of idempotency keys: bounded in count, each entry
// kept ttl after its publish, the oldest forgotten first beyond the bound. The zero value
// is not usable: make one with NewKeyTable.
type KeyTable struct {
	mu      sync.Mutex // held across the check and the publish of a keyed publish
	ttl     time.Duration
	max     int
	entries map[string]*list.Element // of *idemEntry, in order
	order   list.List                // oldest publish first
	evicted uint64                   // keys forgotten before their ttl for max
}

// NewKeyTable returns a KeyTable remembering at most maxKeys keys (at least 1), each for ttl.
func NewKeyTable(ttl time.Duration, maxKeys int) *KeyTable {
	return &KeyTable{ttl: ttl, max: max(maxKeys, 1)}
}

// Evictions returns how many keys were forgotten before their ttl for the bound.
func (t *KeyTable) Evictions() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evicted
}

type idemEntry struct {
	key     string // channel + "\x00" + idempotency key
	expires time.Time
	msg     *session.Message
	digest  string
}

// lookupLocked returns the message recorded under key, if any and not expired.
func (t *KeyTable) lookupLocked(key string, now time.Time) (*idemEntry, bool) {
	t.expireLocked(now)
	if e := t.entries[key]; e != nil {
		return e.Value.(*idemEntry), true
	}
	return nil, false
}

func (t *KeyTable) expireLocked(now time.Time) {
	for e := t.order.Front(); e != nil; e = t.order.Front() {
		ie := e.Value.(*idemEntry)
		if ie.expires.After(now) {
			return
		}
		t.order.Remove(e)
		delete(t.entries, ie.key)
	}
}

func (t *KeyTable) recordLocked(key, digest string, m *session.Message, now time.Time) {
	if t.entries == nil {
		t.entries = make(map[string]*list.Element)
	}
	for len(t.entries) >= t.max {
		e := t.order.Front()
		t.order.Remove(e)
		delete(t.entries, e.Value.(*idemEntry).key)
		t.evicted++
	}
	t.entries[key] = t.order.PushBack(&idemEntry{key: key, expires: now.Add(t.ttl), msg: m, digest: digest})
}

// PublishOnce runs publish unless the idempotency key of ctx was used for channel within
// the window; then it returns the first publish's message, or ErrIdempotencyConflict for
// another payload.
func (t *KeyTable) PublishOnce(ctx context.Context, now time.Time, channel string, data, bin []byte, publish func() (*session.Message, error)) (*session.Message, error) {
	key, err := IdempotencyKey(ctx)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return publish()
	}
	digest := PayloadDigest(data, bin)
	full := channel + "\x00" + key
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.lookupLocked(full, now); ok {
		if e.digest != digest {
			return nil, fmt.Errorf("publish to %s: %w", channel, ErrIdempotencyConflict)
		}
		return e.msg, nil
	}
	m, err := publish()
	if err != nil {
		return nil, err
	}
	t.recordLocked(full, digest, m, now)
	return m, nil
}

// KeyRecord is one idempotency key of a KeyTable, as a broker saves it across a restart
// (KeyTable.Records, KeyTable.Restore).
type KeyRecord struct {
	Channel string
	Key     string
	Expires time.Time
	// Digest is the PayloadDigest of the first publish with Key.
	Digest string
	// Message is what the first publish with Key returned, and what a retry returns.
	Message *session.Message
}

// Records returns the keys of t that have not expired at now, oldest publish first.
func (t *KeyTable) Records(now time.Time) []KeyRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
	out := make([]KeyRecord, 0, len(t.entries))
	for e := t.order.Front(); e != nil; e = e.Next() {
		ie := e.Value.(*idemEntry)
		ch, key, _ := strings.Cut(ie.key, "\x00")
		out = append(out, KeyRecord{Channel: ch, Key: key, Expires: ie.expires, Digest: ie.digest, Message: ie.msg})
	}
	return out
}

// Restore replaces the keys of t with recs (as Records returned them), leaving out those
// expired at now and, beyond t's bound, those that expire first. Each keeps its own
// expiry.
func (t *KeyTable) Restore(recs []KeyRecord, now time.Time) {
	recs = slices.DeleteFunc(slices.Clone(recs), func(r KeyRecord) bool { return !r.Expires.After(now) })
	slices.SortStableFunc(recs, func(x, y KeyRecord) int { return x.Expires.Compare(y.Expires) })
	recs = recs[max(0, len(recs)-t.max):]
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries = make(map[string]*list.Element, len(recs))
	t.order.Init()
	for _, r := range recs {
		full := r.Channel + "\x00" + r.Key
		t.entries[full] = t.order.PushBack(&idemEntry{key: full, expires: r.Expires, msg: r.Message, digest: r.Digest})
	}
}
