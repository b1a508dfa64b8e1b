package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// authnAudience is the resource server of the verification benchmarks.
const authnAudience = "https://payments.example.com"

// authnIssuer is an HTTPS issuer for the verification benchmarks: OpenID
// metadata, a JWKS with one key of the benchmark's algorithm, and an empty
// revocation feed that honours wait, as the identity server serves them.
type authnIssuer struct {
	url    string
	client *http.Client
	signer jose.Signer
}

func startAuthnIssuer(b *testing.B, alg jose.SignatureAlgorithm) *authnIssuer {
	b.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch alg {
	case jose.EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case jose.ES256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.PS256:
		key, err = rsa.GenerateKey(rand.Reader, 3072) // the identity server's PS256 key size
	}
	if err != nil {
		b.Fatal(err)
	}
	iss := &authnIssuer{}
	closing := make(chan struct{})
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{
			"issuer": iss.url, "jwks_uri": iss.url + "/oauth2/jwks",
			"bulwark_revocation_feed_endpoint": iss.url + "/oauth2/revocations",
		})
	})
	mux.HandleFunc("GET /oauth2/jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: string(alg), Use: "sig"}}})
	})
	mux.HandleFunc("GET /oauth2/revocations", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "0" {
			select {
			case <-time.After(25 * time.Second):
			case <-r.Context().Done():
				return
			case <-closing:
			}
		}
		writeJSON(w, map[string]any{"revocations": []any{}, "next": 0})
	})
	ts := httptest.NewTLSServer(mux)
	b.Cleanup(func() {
		close(closing)
		ts.Close()
	})
	iss.url, iss.client = ts.URL, ts.Client()
	iss.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		b.Fatal(err)
	}
	return iss
}

// token signs an access token shaped like the identity server's: RFC 9068
// claims for a user, valid for an hour.
func (iss *authnIssuer) token(b *testing.B) string {
	b.Helper()
	now := time.Now()
	payload, err := json.Marshal(map[string]any{
		"iss": iss.url, "sub": "usr_01J9Z3K4T7QW2M8X5B6N0PRD4F", "aud": authnAudience,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(), "auth_time": now.Unix(),
		"jti": "at_6b1f0c9a2e7d4f3b8a5c1e0d9f2b7a64", "client_id": "cli_payments_web",
		"scope": "openid profile payments:read payments:write",
	})
	if err != nil {
		b.Fatal(err)
	}
	jws, err := iss.signer.Sign(payload)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

func newAuthnVerifier(b *testing.B, iss *authnIssuer, cacheSize int) *authn.Verifier {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v, err := authn.New(ctx, authn.Config{
		Issuer: iss.url, Audience: authnAudience, HTTPClient: iss.client,
		CacheSize: cacheSize, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		<-v.Done()
	})
	return v
}

// BenchmarkVerifyCached measures sdk/authn verifying a valid EdDSA token
// it has verified before (a cache hit: shape check, cache key, revocation
// check), from GOMAXPROCS goroutines. "VerifyToken" is the bearer core,
// "VerifyRequest" the HTTP entry point with the Authorization header. One
// op is one verification. Target: at least 100,000 verifications/s on 2
// cores.
func BenchmarkVerifyCached(b *testing.B) {
	iss := startAuthnIssuer(b, jose.EdDSA)
	v := newAuthnVerifier(b, iss, 0)
	tok := iss.token(b)
	ctx := context.Background()
	if _, err := v.VerifyToken(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.Run("VerifyToken", func(b *testing.B) {
		runVerifications(b, func() error {
			_, err := v.VerifyToken(ctx, tok)
			return err
		})
	})
	b.Run("VerifyRequest", func(b *testing.B) {
		req := httptest.NewRequest(http.MethodGet, "https://payments.example.com/v1/transfers", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		runVerifications(b, func() error {
			_, err := v.VerifyRequest(req)
			return err
		})
	})
}

// BenchmarkVerifyUncached measures full verification of a valid token with
// the cache disabled: shape and header checks, go-jose parsing, signature
// verification, claims decoding and checks. One op is one verification.
func BenchmarkVerifyUncached(b *testing.B) {
	for _, alg := range []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.PS256} {
		b.Run(string(alg), func(b *testing.B) {
			iss := startAuthnIssuer(b, alg)
			v := newAuthnVerifier(b, iss, -1)
			tok := iss.token(b)
			ctx := context.Background()
			runVerifications(b, func() error {
				_, err := v.VerifyToken(ctx, tok)
				return err
			})
		})
	}
}

// runVerifications runs verify b.N times from GOMAXPROCS goroutines and
// reports verifications per second of wall time.
func runVerifications(b *testing.B, verify func() error) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := verify(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "verifications/s")
}

// TestAuthnAgainstIdentityServer runs sdk/authn against the real identity
// server: a client-credentials token and a DPoP-bound one are accepted by a
// resource server behind authn's Middleware, and after the first is revoked
// at the server's revocation endpoint (RFC 7009) the verifier refuses it
// within 5 s, through the revocation feed.
func TestAuthnAgainstIdentityServer(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, store.SQLite)
	l := startLog(t, db, audit.Config{}, nil)
	var handler http.Handler = http.NotFoundHandler()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	sealer, err := keys.OpenSealed(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := identity.New(ctx, identity.DefaultConfig(ts.URL), identity.Deps{DB: db, Sealer: sealer, Audit: l, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux, func(next http.Handler) http.Handler { return next })
	handler = httpapi.WithRequestID(mux)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const clientID = "svc-payments"
	if err := srv.CreateClient(ctx, &identity.Client{
		ID: clientID, Profile: identity.ProfileOAuth2, TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}},
		GrantTypes: []string{identity.GrantClientCredentials}, Scopes: []string{"payments:read"}, Audiences: []string{authnAudience},
	}); err != nil {
		t.Fatal(err)
	}

	vctx, cancel := context.WithCancel(ctx)
	var refusals atomic.Value
	v, err := authn.New(vctx, authn.Config{
		Issuer: ts.URL, Audience: authnAudience, HTTPClient: ts.Client(), Logger: slog.New(slog.DiscardHandler),
		OnRefusal: func(_ context.Context, r authn.Refusal) { refusals.Store(r) },
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-v.Done()
	})
	rs := httptest.NewTLSServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := authn.FromContext(r.Context())
		_, _ = io.WriteString(w, p.Subject+" "+strings.Join(p.Scopes, " "))
	})))
	t.Cleanup(rs.Close)

	// assertion is client authentication (private_key_jwt) for one request.
	assertion := func() url.Values {
		a := assertionBodies(t, ts.URL, clientID, priv, 1)[0]
		form, err := url.ParseQuery(a)
		if err != nil {
			t.Fatal(err)
		}
		return url.Values{"client_assertion_type": form["client_assertion_type"], "client_assertion": form["client_assertion"]}
	}
	post := func(hc *http.Client, path string, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := hc.PostForm(ts.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	get := func(hc *http.Client, authz string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, rs.URL+"/v1/transfers", nil)
		req.Header.Set("Authorization", authz)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// A bearer token.
	form := assertion()
	form.Set("grant_type", identity.GrantClientCredentials)
	status, tok := post(ts.Client(), identity.PathToken, form)
	bearer, _ := tok["access_token"].(string)
	if status != http.StatusOK || bearer == "" {
		t.Fatalf("token request: %d %v", status, tok)
	}
	if code, body := get(rs.Client(), "Bearer "+bearer); code != http.StatusOK || body != clientID+" payments:read" {
		t.Fatalf("bearer token: %d %q", code, body)
	}

	// A DPoP-bound token, requested and used through dpop.Transport.
	_, dpopKey, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := dpop.NewSigner(dpopKey)
	if err != nil {
		t.Fatal(err)
	}
	dpopToIssuer := &http.Client{Transport: &dpop.Transport{Base: ts.Client().Transport, Signer: signer}}
	form = assertion()
	form.Set("grant_type", identity.GrantClientCredentials)
	status, tok = post(dpopToIssuer, identity.PathToken, form)
	bound, _ := tok["access_token"].(string)
	if status != http.StatusOK || bound == "" || tok["token_type"] != "DPoP" {
		t.Fatalf("DPoP token request: %d %v", status, tok)
	}
	dpopToRS := &http.Client{Transport: &dpop.Transport{Base: rs.Client().Transport, Signer: signer}}
	if code, body := get(dpopToRS, "DPoP "+bound); code != http.StatusOK {
		t.Fatalf("DPoP-bound token: %d %q", code, body)
	}
	if code, _ := get(rs.Client(), "Bearer "+bound); code != http.StatusUnauthorized {
		t.Fatalf("DPoP-bound token as bearer: %d", code)
	}

	// Revocation reaches the verifier through the feed.
	form = assertion()
	form.Set("token", bearer)
	if status, out := post(ts.Client(), identity.PathRevoke, form); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, out)
	}
	start := time.Now()
	for {
		code, _ := get(rs.Client(), "Bearer "+bearer)
		if code == http.StatusUnauthorized {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("revoked token still accepted after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revoked token refused after %s", time.Since(start))
	if r, _ := refusals.Load().(authn.Refusal); r.Reason != authn.ReasonRevoked || r.ClientID != clientID {
		t.Errorf("refusal %+v", r)
	}
}
