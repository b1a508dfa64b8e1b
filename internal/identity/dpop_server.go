package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// HeaderDPoPNonce is the response header carrying a server nonce
// (RFC 9449 §8).
const HeaderDPoPNonce = "DPoP-Nonce"

// dpopNonceWindow is how long a server nonce stays current; a nonce is
// accepted in its own window and the next, so for 5 to 10 minutes.
const dpopNonceWindow = 5 * time.Minute

// checkDPoP verifies the DPoP proof of r (RFC 9449 §4.3), if it has one:
// nil, nil when there is no DPoP header. The proof must be for this
// method and URL, within s.cfg.ProofWindow of now, bound to accessToken
// when that is set (a request to a protected resource), and used once.
// When s.cfg.DPoPNonce is set, a proof to an authorization-server endpoint
// (accessToken empty) must carry a current server nonce; otherwise the
// DPoP-Nonce header is set on w and the error is use_dpop_nonce.
func (s *Server) checkDPoP(w http.ResponseWriter, r *http.Request, accessToken string) (*dpop.Proof, error) {
	vals := r.Header.Values("DPoP")
	if len(vals) == 0 {
		return nil, nil
	}
	if len(vals) > 1 {
		return nil, ErrInvalidDPoPProof.WithDescription("send exactly one DPoP header")
	}
	now := s.now()
	p, err := dpop.Verify(vals[0], dpop.VerifyOptions{
		Method:      r.Method,
		URL:         s.endpoint(r.URL.Path),
		Now:         now,
		Window:      s.cfg.ProofWindow,
		AccessToken: accessToken,
		Algorithms:  allowedClientAlgs,
	})
	if err != nil {
		return nil, ErrInvalidDPoPProof.WithDescription("the DPoP proof is not valid for this request").WithCause(err)
	}
	if p.JTI == "" || len(p.JTI) > maxJTILen || p.Thumbprint == "" {
		return nil, ErrInvalidDPoPProof.WithDescription("the DPoP proof needs a jti of at most %d bytes", maxJTILen)
	}
	if s.cfg.DPoPNonce && accessToken == "" {
		nonces := s.dpopNonces()
		if !nonces.valid(p.Nonce, now) {
			w.Header().Set(HeaderDPoPNonce, nonces.current(now))
			return nil, ErrUseDPoPNonce.WithDescription("the DPoP proof must carry the nonce in the DPoP-Nonce header")
		}
	}
	err = s.useOnce(r.Context(), replayDPoP, p.Thumbprint+":"+p.JTI, p.IssuedAt.Add(s.cfg.ProofWindow))
	if errors.Is(err, errReplay) {
		return nil, ErrInvalidDPoPProof.WithDescription("the DPoP proof was already used (jti)")
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// setDPoPNonce gives the client the current server nonce, when nonces are
// in use, on a successful response.
func (s *Server) setDPoPNonce(w http.ResponseWriter) {
	if s.cfg.DPoPNonce {
		w.Header().Set(HeaderDPoPNonce, s.dpopNonces().current(s.now()))
	}
}

// nonceSource makes and checks stateless DPoP server nonces:
// base64url(window counter || HMAC-SHA256(key, label || counter)[:16]).
//
// The key is random and kept in memory, made when the server first needs
// it. Behind a load balancer each replica has its own key, so a nonce from
// one replica is refused by another with use_dpop_nonce and a fresh nonce,
// and the client retries with it (RFC 9449 §8 allows a server to change
// nonces at any time); sticky sessions avoid the extra round trip.
type nonceSource struct {
	key [32]byte
	// last caches the nonce of the latest window asked for.
	last atomic.Pointer[windowNonce]
}

// windowNonce is the nonce of one window.
type windowNonce struct {
	ctr   uint64
	nonce string
}

const (
	nonceLabel  = "bulwark dpop nonce v1"
	nonceMACLen = 16
)

func newNonceSource() *nonceSource {
	n := &nonceSource{}
	if _, err := rand.Read(n.key[:]); err != nil {
		panic("identity: crypto/rand failed: " + err.Error()) // rand.Read never fails on supported platforms
	}
	return n
}

func nonceCounter(now time.Time) uint64 {
	return uint64(now.Unix()) / uint64(dpopNonceWindow/time.Second)
}

// encode returns the nonce of window ctr.
func (n *nonceSource) encode(ctr uint64) string {
	var buf [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(buf[:8], ctr)
	m := hmac.New(sha256.New, n.key[:])
	m.Write([]byte(nonceLabel))
	m.Write(buf[:8])
	m.Sum(buf[8:8])
	return base64.RawURLEncoding.EncodeToString(buf[:8+nonceMACLen])
}

// current returns the nonce of now's window.
func (n *nonceSource) current(now time.Time) string {
	ctr := nonceCounter(now)
	if w := n.last.Load(); w != nil && w.ctr == ctr {
		return w.nonce
	}
	w := &windowNonce{ctr: ctr, nonce: n.encode(ctr)}
	n.last.Store(w)
	return w.nonce
}

// valid reports whether nonce was made by n for now's window or the one
// before.
func (n *nonceSource) valid(nonce string, now time.Time) bool {
	if len(nonce) != base64.RawURLEncoding.EncodedLen(8+nonceMACLen) {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil {
		return false
	}
	ctr, cur := binary.BigEndian.Uint64(b[:8]), nonceCounter(now)
	if ctr != cur && ctr+1 != cur {
		return false
	}
	return hmac.Equal([]byte(n.encode(ctr)), []byte(nonce))
}

// dpopNonces returns the server's nonce source. Each replica has its own
// key: a client that brings one replica's nonce to another is simply given
// a fresh nonce and retries (RFC 9449 §8).
func (s *Server) dpopNonces() *nonceSource { return s.nonces }
