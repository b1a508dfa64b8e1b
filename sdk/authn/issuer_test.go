package authn

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// testAudience is the resource server the test tokens are for.
const testAudience = "https://api.example.com"

// issuerKey is one of the test issuer's signing keys.
type issuerKey struct {
	kid    string
	alg    string
	signer crypto.Signer
}

// testIssuer is a real HTTPS authorization server for the tests: it serves
// OpenID metadata, a JWKS of the keys it publishes, and the revocation feed
// of the agreed contract, and signs tokens with its keys.
type testIssuer struct {
	t   testing.TB
	srv *httptest.Server
	url string

	clock *testClock

	mu        sync.Mutex
	keys      map[string]*issuerKey // every key, published or not
	published []string              // kids in the JWKS, in order
	extraJWKS []json.RawMessage     // raw extra JWKS entries
	maxAge    int
	revs      []feedEntry
	seq       int64
	changed   chan struct{} // closed and replaced when revs grows
	feedDown  bool

	jwksHits atomic.Int64
	feedHits atomic.Int64
	closing  chan struct{}
}

// testClock is the injected clock shared by issuer and verifier.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// newTestIssuer starts an issuer with an EdDSA, an ES256 and a PS256 key,
// all published. The EdDSA key ("ed") is the default signer.
func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	iss := &testIssuer{t: t, clock: &testClock{}, keys: map[string]*issuerKey{}, maxAge: 300,
		changed: make(chan struct{}), closing: make(chan struct{})}
	iss.addKey("ed", "EdDSA")
	iss.addKey("ec", "ES256")
	iss.addKey("rsa", "PS256")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeTestJSON(w, map[string]string{
			"issuer":                           iss.url,
			"jwks_uri":                         iss.url + "/jwks",
			"bulwark_revocation_feed_endpoint": iss.url + "/oauth2/revocations",
		})
	})
	mux.HandleFunc("GET /jwks", iss.serveJWKS)
	mux.HandleFunc("GET /oauth2/revocations", iss.serveFeed)
	iss.srv = httptest.NewUnstartedServer(mux)
	iss.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	iss.srv.StartTLS()
	iss.url = iss.srv.URL
	t.Cleanup(func() {
		close(iss.closing)
		iss.srv.Close()
	})
	return iss
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// addKey generates and publishes a key.
func (iss *testIssuer) addKey(kid, alg string) *issuerKey {
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "PS256", "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil || k == nil {
		iss.t.Fatalf("generate %s key: %v", alg, err)
	}
	ik := &issuerKey{kid: kid, alg: alg, signer: k}
	iss.mu.Lock()
	iss.keys[kid] = ik
	iss.published = append(iss.published, kid)
	iss.mu.Unlock()
	return ik
}

// unpublish removes a key from the JWKS (it can still sign).
func (iss *testIssuer) unpublish(kid string) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	for i, k := range iss.published {
		if k == kid {
			iss.published = append(iss.published[:i], iss.published[i+1:]...)
			return
		}
	}
}

func (iss *testIssuer) key(kid string) *issuerKey {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	return iss.keys[kid]
}

func (iss *testIssuer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	iss.jwksHits.Add(1)
	iss.mu.Lock()
	keys := make([]any, 0, len(iss.published)+len(iss.extraJWKS))
	for _, kid := range iss.published {
		k := iss.keys[kid]
		keys = append(keys, jose.JSONWebKey{Key: k.signer.Public(), KeyID: kid, Algorithm: k.alg, Use: "sig"})
	}
	for _, raw := range iss.extraJWKS {
		keys = append(keys, raw)
	}
	maxAge := iss.maxAge
	iss.mu.Unlock()
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	writeTestJSON(w, map[string]any{"keys": keys})
}

// revoke adds a token to the revocation feed.
func (iss *testIssuer) revoke(jti string, exp time.Time) {
	iss.mu.Lock()
	iss.seq++
	iss.revs = append(iss.revs, feedEntry{Seq: iss.seq, JTI: jti, Exp: exp.Unix()})
	close(iss.changed)
	iss.changed = make(chan struct{})
	iss.mu.Unlock()
}

func (iss *testIssuer) serveFeed(w http.ResponseWriter, r *http.Request) {
	iss.feedHits.Add(1)
	after, err1 := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, err2 := strconv.Atoi(r.URL.Query().Get("wait"))
	if err1 != nil || err2 != nil || wait < 0 || wait > 30 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	deadline := time.NewTimer(time.Duration(wait) * time.Second)
	defer deadline.Stop()
	for {
		iss.mu.Lock()
		if iss.feedDown {
			iss.mu.Unlock()
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		out := []feedEntry{}
		now := iss.clock.Now().Unix()
		for _, e := range iss.revs {
			if e.Seq > after && e.Exp > now && len(out) < 1000 {
				out = append(out, e)
			}
		}
		next := after
		if len(out) > 0 {
			next = out[len(out)-1].Seq
		} else if iss.seq > after {
			next = iss.seq
		}
		changed := iss.changed
		iss.mu.Unlock()
		if len(out) > 0 || wait == 0 {
			writeTestJSON(w, map[string]any{"revocations": out, "next": next})
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			wait = 0
		case <-r.Context().Done():
			return
		case <-iss.closing:
			return
		}
	}
}

// claims returns the claims of a valid access token for testAudience,
// with overrides applied (a nil value deletes the claim).
func (iss *testIssuer) claims(overrides map[string]any) map[string]any {
	now := iss.clock.Now()
	var id [12]byte
	_, _ = rand.Read(id[:])
	c := map[string]any{
		"iss":       iss.url,
		"sub":       "usr_alice",
		"aud":       testAudience,
		"exp":       now.Add(5 * time.Minute).Unix(),
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"jti":       "at_" + base64.RawURLEncoding.EncodeToString(id[:]),
		"client_id": "cli_web",
		"scope":     "openid accounts:read",
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// token signs claims with the key kid through go-jose, with typ at+jwt.
func (iss *testIssuer) token(kid string, claims map[string]any) string {
	iss.t.Helper()
	k := iss.key(kid)
	opts := (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.alg), Key: k.signer}, opts)
	if err != nil {
		iss.t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		iss.t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		iss.t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		iss.t.Fatal(err)
	}
	return out
}

// rawToken assembles a compact JWS from a raw header and claims and signs
// its signing input with sign (nil: empty signature).
func rawToken(t testing.TB, header string, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// signer returns a function that signs a JWS signing input with k under
// alg, producing JWS signature bytes.
func signer(t testing.TB, alg string, k crypto.Signer) func([]byte) []byte {
	return func(input []byte) []byte {
		t.Helper()
		var (
			sig []byte
			err error
		)
		switch alg {
		case "EdDSA":
			sig = ed25519.Sign(k.(ed25519.PrivateKey), input)
		case "ES256":
			d := sha256.Sum256(input)
			r, s, e := ecdsa.Sign(rand.Reader, k.(*ecdsa.PrivateKey), d[:])
			if e != nil {
				t.Fatal(e)
			}
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		case "PS256":
			d := sha256.Sum256(input)
			sig, err = rsa.SignPSS(rand.Reader, k.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		case "RS256":
			d := sha256.Sum256(input)
			sig, err = rsa.SignPKCS1v15(rand.Reader, k.(*rsa.PrivateKey), crypto.SHA256, d[:])
		default:
			t.Fatalf("signer: unknown alg %s", alg)
		}
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

// header is a JOSE header as JSON.
func header(t testing.TB, fields map[string]any) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// recorder collects refusals and log output.
type recorder struct {
	mu       sync.Mutex
	refusals []Refusal
	logs     bytes.Buffer
}

func (r *recorder) onRefusal(_ context.Context, rf Refusal) {
	r.mu.Lock()
	r.refusals = append(r.refusals, rf)
	r.mu.Unlock()
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.Write(p)
}

func (r *recorder) last() (Refusal, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.refusals) == 0 {
		return Refusal{}, 0
	}
	return r.refusals[len(r.refusals)-1], len(r.refusals)
}

func (r *recorder) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// newVerifier starts a verifier against iss, bound to the test's lifetime.
func newVerifier(t testing.TB, iss *testIssuer, rec *recorder, mod func(*Config)) *Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		Issuer:     iss.url,
		Audience:   testAudience,
		HTTPClient: iss.srv.Client(),
		Now:        iss.clock.Now,
		Logger:     slog.New(slog.DiscardHandler),
	}
	if rec != nil {
		cfg.OnRefusal = rec.onRefusal
		cfg.Logger = slog.New(slog.NewJSONHandler(rec, nil))
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-v.Done():
		case <-time.After(10 * time.Second):
			t.Error("verifier goroutines did not stop")
		}
	})
	return v
}
