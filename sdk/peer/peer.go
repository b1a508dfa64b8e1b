// Package peer lets a service trust what its Bulwark agent tells it about a
// request: who called (the peer's verified SPIFFE ID), on whose behalf (the
// end user and OAuth client of the internal token the agent verified), and
// under which correlation id.
//
// A service behind an agent listens on loopback only, but loopback is shared
// by every process of the host. So the agent signs the identity headers it
// sets with a key it shares with that one service (HMAC-SHA256 over the
// method, the path, the identity headers and a timestamp), and the service
// refuses any request whose signature is missing, wrong or older than
// MaxAge: a request that did not come through the agent — a direct
// connection to the service's port — is refused.
//
// Usage in a service:
//
//	key, err := peer.LoadKeyFile("/etc/bulwark/payments.peer.key")
//	...
//	http.ListenAndServe("127.0.0.1:8081", peer.Middleware(key, onRefused)(mux))
//
// and in a handler:
//
//	id, _ := peer.FromContext(r.Context())
//	log.Println(id.Peer, id.User, id.RequestID)
package peer

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Headers the agent sets for the local service. A caller's own values of
// these headers never reach the service: the agent removes them first.
const (
	// HeaderPeerID is the caller's verified SPIFFE ID.
	HeaderPeerID = "X-Bulwark-Peer-ID"
	// HeaderUser is the end user the request acts for: the subject of the
	// verified internal token, when that subject is a user.
	HeaderUser = "X-Bulwark-User"
	// HeaderClient is the OAuth client the request started from, from the
	// verified internal token (authn.Principal.OriginClient): the
	// application the user authorized, not the gateway that exchanged its
	// token.
	HeaderClient = "X-Bulwark-Client"
	// HeaderRequestID is the request's correlation id.
	HeaderRequestID = "X-Request-ID"
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256>".
	HeaderSignature = "X-Bulwark-Signature"
)

// KeySize is the size of a key in bytes.
const KeySize = 32

// MaxAge is how old a signature may be, and how far in the future its
// timestamp may lie (clock steps between agent and service are the same
// clock on one host, so this only absorbs scheduling delays).
const MaxAge = 60 * time.Second

// ErrUnsigned, ErrBadSignature and ErrExpired classify Verify's refusals.
var (
	ErrUnsigned     = errors.New("request not signed by the agent")
	ErrBadSignature = errors.New("agent signature does not verify")
	ErrExpired      = errors.New("agent signature too old or from the future")
)

// Identity is what the agent verified about a request.
type Identity struct {
	// Peer is the caller's SPIFFE ID.
	Peer spiffeid.ID
	// User is the end user the request acts for, or "" for a purely
	// service-to-service call.
	User string
	// Client is the OAuth client of the internal token, or "".
	Client string
	// RequestID is the correlation id.
	RequestID string
}

// NewKey returns a new random key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	return k, nil
}

// EncodeKey returns the file form of key: hex and a newline.
func EncodeKey(key []byte) []byte { return []byte(hex.EncodeToString(key) + "\n") }

// LoadKeyFile reads a key written by EncodeKey (KeySize bytes in hex).
func LoadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4*KeySize))
	if err != nil {
		return nil, fmt.Errorf("peer key %s: %w", path, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("peer key %s: want %d bytes in hex on one line", path, KeySize)
	}
	return key, nil
}

// Sign sets the signature of the identity headers already in h for a
// request of method to path (the request URI: escaped path and query).
// The agent calls it after setting the identity headers.
func Sign(h http.Header, key []byte, method, path string, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderSignature, "t="+ts+",v1="+hex.EncodeToString(mac(key, ts, method, path, h)))
}

// Verify checks the signature in h for a request of method to path and
// returns the identity the agent vouched for.
func Verify(h http.Header, key []byte, method, path string, now time.Time) (*Identity, error) {
	sigs := h.Values(HeaderSignature)
	if len(sigs) == 0 {
		return nil, ErrUnsigned
	}
	if len(sigs) > 1 {
		return nil, fmt.Errorf("%w: more than one signature", ErrBadSignature)
	}
	ts, sig, ok := parseSignature(sigs[0])
	if !ok {
		return nil, fmt.Errorf("%w: malformed", ErrBadSignature)
	}
	for _, name := range []string{HeaderPeerID, HeaderUser, HeaderClient, HeaderRequestID} {
		if len(h.Values(name)) > 1 {
			return nil, fmt.Errorf("%w: more than one %s", ErrBadSignature, name)
		}
	}
	if !hmac.Equal(sig, mac(key, ts, method, path, h)) {
		return nil, ErrBadSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: timestamp", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxAge || d < -MaxAge {
		return nil, ErrExpired
	}
	id, err := spiffeid.FromString(h.Get(HeaderPeerID))
	if err != nil {
		return nil, fmt.Errorf("%w: peer id: %w", ErrBadSignature, err)
	}
	return &Identity{Peer: id, User: h.Get(HeaderUser), Client: h.Get(HeaderClient), RequestID: h.Get(HeaderRequestID)}, nil
}

// mac is the HMAC-SHA256 of the signed fields, newline-separated; header
// values cannot hold a newline, so the encoding is unambiguous.
func mac(key []byte, ts, method, path string, h http.Header) []byte {
	m := hmac.New(sha256.New, key)
	for _, s := range []string{"bulwark-peer-v1", ts, method, path,
		h.Get(HeaderPeerID), h.Get(HeaderUser), h.Get(HeaderClient), h.Get(HeaderRequestID)} {
		io.WriteString(m, s)
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

// parseSignature splits "t=<digits>,v1=<64 hex>".
func parseSignature(v string) (ts string, sig []byte, ok bool) {
	t, rest, found := strings.Cut(v, ",")
	if !found || !strings.HasPrefix(t, "t=") || !strings.HasPrefix(rest, "v1=") {
		return "", nil, false
	}
	ts = t[2:]
	if ts == "" || len(ts) > 19 || strings.Trim(ts, "0123456789") != "" {
		return "", nil, false
	}
	sig, err := hex.DecodeString(rest[3:])
	if err != nil || len(sig) != sha256.Size {
		return "", nil, false
	}
	return ts, sig, true
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity Middleware verified.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// Middleware refuses with 401 every request without a valid agent
// signature, calling onRefused (if not nil) with the reason so the service
// can audit it, and passes the others on with their Identity in the
// context.
func Middleware(key []byte, onRefused func(r *http.Request, err error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := Verify(r.Header, key, r.Method, r.URL.RequestURI(), time.Now())
			if err != nil {
				if onRefused != nil {
					onRefused(r, err)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "unauthenticated",
					"error_description": "requests reach this service only through its Bulwark agent"})
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
		})
	}
}
