package gateway

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

const (
	testTD          = "bank.test"
	testAudience    = "bank-api"
	testGatewayID   = "spiffe://bank.test/ns/bank/sa/gateway"
	testPaymentsID  = "spiffe://bank.test/ns/bank/sa/payments"
	testFlakyID     = "spiffe://bank.test/ns/bank/sa/flaky"
	testExchangeCID = "bank-api"
)

// staticSource serves one SVID and one trust bundle.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

// testIssuer is an OAuth authorization server for the tests: discovery,
// JWKS, an empty revocation feed, and a token endpoint that performs token
// exchange for the gateway's client (checking its private_key_jwt
// assertion).
type testIssuer struct {
	t         testing.TB
	srv       *httptest.Server
	url       string
	key       ed25519.PrivateKey
	clientKey ed25519.PrivateKey

	down      atomic.Bool
	exchanges atomic.Int64
	mu        sync.Mutex
	audiences []string
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, ck, _ := ed25519.GenerateKey(rand.Reader)
	iss := &testIssuer{t: t, key: key, clientKey: ck}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{
			"issuer": iss.url, "jwks_uri": iss.url + "/jwks", "token_endpoint": iss.url + "/token",
			"bulwark_revocation_feed_endpoint": iss.url + "/revocations",
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}})
	})
	mux.HandleFunc("GET /revocations", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "0" && r.URL.Query().Get("wait") != "" {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"revocations": []any{}, "next": 0})
	})
	mux.HandleFunc("POST /token", iss.serveToken)
	iss.srv = httptest.NewUnstartedServer(mux)
	iss.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	iss.srv.StartTLS()
	iss.url = iss.srv.URL
	t.Cleanup(iss.srv.Close)
	return iss
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveToken performs token exchange: it checks the client assertion and
// issues a token for the audience with the subject token's subject.
func (iss *testIssuer) serveToken(w http.ResponseWriter, r *http.Request) {
	if iss.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	f := r.PostForm
	jws, err := jose.ParseSignedCompact(f.Get("client_assertion"), []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	payload, err := jws.Verify(iss.clientKey.Public())
	var ac struct {
		Iss, Sub string
		Aud      any
	}
	if err != nil || json.Unmarshal(payload, &ac) != nil || ac.Iss != testExchangeCID || ac.Sub != testExchangeCID || ac.Aud != iss.url+"/token" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	if f.Get("grant_type") != grantTokenExchange || f.Get("subject_token_type") != tokenTypeAccessToken {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	parts := strings.Split(f.Get("subject_token"), ".")
	var sub struct {
		Sub      string `json:"sub"`
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
	}
	if len(parts) != 3 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &sub)
	iss.exchanges.Add(1)
	iss.mu.Lock()
	iss.audiences = append(iss.audiences, f.Get("audience"))
	iss.mu.Unlock()
	// As the real server: the acting client is client_id, the subject
	// keeps its type in subject_type.
	subjectType := "user"
	if sub.Sub == sub.ClientID {
		subjectType = "client"
	}
	tok := iss.token(map[string]any{"sub": sub.Sub, "client_id": testExchangeCID, "aud": f.Get("audience"), "scope": sub.Scope,
		"act": map[string]any{"sub": testExchangeCID}, "subject_type": subjectType})
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "issued_token_type": tokenTypeAccessToken, "token_type": "Bearer", "expires_in": 300})
}

// claims returns valid access-token claims for the gateway's audience with
// overrides (nil deletes).
func (iss *testIssuer) claims(overrides map[string]any) map[string]any {
	now := time.Now()
	var id [12]byte
	_, _ = rand.Read(id[:])
	c := map[string]any{
		"iss": iss.url, "sub": "usr_alice", "aud": testAudience, "client_id": "bank-app",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"jti": "at_" + base64.RawURLEncoding.EncodeToString(id[:]), "scope": "payments:write accounts:read",
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

// token signs claims (merged over the defaults) with key (nil: the issuer's).
func (iss *testIssuer) tokenWith(key crypto.Signer, overrides map[string]any) string {
	iss.t.Helper()
	if key == nil {
		key = iss.key
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		iss.t.Fatal(err)
	}
	payload, _ := json.Marshal(iss.claims(overrides))
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

func (iss *testIssuer) token(overrides map[string]any) string { return iss.tokenWith(nil, overrides) }

// verifier returns an sdk/authn verifier of iss for audience.
func (iss *testIssuer) verifier(t testing.TB, audience string, onRefusal func(context.Context, authn.Refusal)) *authn.Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v, err := authn.New(ctx, authn.Config{Issuer: iss.url, Audience: audience, HTTPClient: iss.srv.Client(),
		Logger: slog.New(slog.DiscardHandler), OnRefusal: onRefusal})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-v.Done()
	})
	return v
}

// recorder is the gateway's Events: it keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []*audit.Event
}

func (r *recorder) Send(_ context.Context, events ...*audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if err := e.Normalize(time.Now()); err != nil {
			return err
		}
		r.events = append(r.events, e)
	}
	return nil
}

// find returns the events with correlation id rid.
func (r *recorder) find(rid string) []*audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*audit.Event
	for _, e := range r.events {
		if e.Metadata.CorrelationUID == rid {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) all() []*audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*audit.Event(nil), r.events...)
}

// staticResolver resolves names from a map.
type staticResolver map[string]struct {
	id        spiffeid.ID
	endpoints []string
}

func (s staticResolver) Resolve(_ context.Context, name string) (spiffeid.ID, []string, error) {
	e, ok := s[name]
	if !ok {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: %s", mesh.ErrUnknownService, name)
	}
	return e.id, e.endpoints, nil
}

// echo is the service behind the payments agent: it records what reached it.
type echo struct {
	hits atomic.Int64
	mu   sync.Mutex
	last http.Header
	path string
	body string
}

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.hits.Add(1)
	b, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.last, e.path, e.body = r.Header.Clone(), r.URL.RequestURI(), string(b)
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
}

func (e *echo) seen() (http.Header, string, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last, e.path, e.body
}

// startInbound runs a mesh Inbound for self in front of h and returns its
// address.
func startInbound(t testing.TB, ca *mtlstest.CA, self string, h http.Handler, tokens mesh.TokenVerifier) string {
	t.Helper()
	svc := httptest.NewServer(h)
	t.Cleanup(svc.Close)
	id := spiffeid.RequireFromString(self)
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"mesh.cedar": fmt.Sprintf(
		`permit(principal == Bulwark::Service::%q, action == Bulwark::Action::"call", resource == Bulwark::Service::%q);`, testGatewayID, self)}})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: svc.URL, Self: id, PeerKey: key},
		mesh.InboundDeps{Source: staticSource{svid: ca.SVID(t, self), bundle: ca.Bundle()}, Decider: ev, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = in.ServeListener(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 and
// returns the files and a pool trusting it.
func writeServingCert(t testing.TB, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cf, kf := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return cf, kf, pool
}

// serveGateway runs g on 127.0.0.1:0 until the test ends and returns its
// URL and a client that trusts its certificate.
func serveGateway(t testing.TB, g *Gateway, roots *x509.CertPool) (string, *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(client.CloseIdleConnections)
	return "https://" + ln.Addr().String(), client
}
