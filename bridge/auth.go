package bridge

import (
	"errors"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// JWTConfig configures JWTAuthenticator.
type JWTConfig struct {
	// Key verifies HS256 signatures. Required.
	Key []byte
	// Cookie is the name of the cookie that may carry the token; default "ferry_token".
	Cookie string
	// MaxAge bounds the lifetime of accepted tokens: exp - iat, or exp - now for a token
	// without iat (which can't claim to be older than it is); default 24 h. Tokens without
	// exp are refused.
	MaxAge time.Duration
	// Leeway tolerates clock skew; default 30 s.
	Leeway time.Duration
}

// TokenClaims are the JWT claims Ferry reads: the subject is the identity, and
// "channels" lists channel patterns (path.Match syntax, e.g. "room:*") the identity may
// subscribe and publish to beyond the default policy.
type TokenClaims struct {
	Channels []string `json:"channels,omitempty"`
	jwt.RegisteredClaims
}

// JWTAuthenticator verifies HMAC-signed JWTs (HS256) carried by an Authorization: Bearer
// header, a token query parameter (for EventSource and WebSocket, which can't set
// headers) or a cookie. A request with no token presents no identity; a bad or wrongly
// signed token is refused with 401 (code 4101), an expired one with 401 (code 4006: get a
// fresh token and negotiate again).
func JWTAuthenticator(cfg JWTConfig) transport.Authenticator {
	if cfg.Cookie == "" {
		cfg.Cookie = "ferry_token"
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway), jwt.WithIssuedAt())
	key := func(*jwt.Token) (any, error) { return cfg.Key, nil }
	return func(r *http.Request) (session.Identity, bool, error) {
		raw := tokenOf(r, cfg.Cookie)
		if raw == "" {
			return session.Identity{}, false, nil
		}
		if len(raw) > 8192 {
			return session.Identity{}, false, session.Errorf(session.CodeUnauthorized, "token too long")
		}
		var c TokenClaims
		if _, err := parser.ParseWithClaims(raw, &c, key); err != nil {
			if errors.Is(err, jwt.ErrTokenExpired) {
				// Not terminal: the client can get a fresh token and negotiate again.
				return session.Identity{}, false, session.ErrTokenExpired
			}
			return session.Identity{}, false, session.Errorf(session.CodeUnauthorized, "invalid token")
		}
		if c.Subject == "" {
			return session.Identity{}, false, session.Errorf(session.CodeUnauthorized, "invalid token: no subject")
		}
		// A token without iat is measured from now: otherwise leaving iat out would
		// lift the cap (a token valid for ten years).
		issued := time.Now()
		if c.IssuedAt != nil {
			issued = c.IssuedAt.Time
		}
		if c.ExpiresAt.Sub(issued) > cfg.MaxAge {
			return session.Identity{}, false, session.Errorf(session.CodeUnauthorized, "invalid token: lifetime over %v", cfg.MaxAge)
		}
		for _, p := range c.Channels {
			if _, err := path.Match(p, ""); err != nil {
				return session.Identity{}, false, session.Errorf(session.CodeUnauthorized, "invalid token: bad channel pattern")
			}
		}
		return session.Identity{User: c.Subject, Expires: c.ExpiresAt.Time, Grants: c.Channels}, true, nil
	}
}

// tokenOf finds a token in the Authorization header, the token parameter or the cookie,
// in that order.
func tokenOf(r *http.Request, cookie string) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if c, err := r.Cookie(cookie); err == nil {
		return c.Value
	}
	return ""
}

// granted reports whether channel matches one of the patterns.
func granted(patterns []string, channel string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, channel); ok {
			return true
		}
	}
	return false
}
