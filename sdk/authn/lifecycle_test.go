package authn

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestRevocationReachesVerifier: a token accepted (and cached) is refused
// within 5 s of its revocation appearing in the issuer's feed.
func TestRevocationReachesVerifier(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	claims := iss.claims(nil)
	tok := iss.token("ed", claims)
	other := iss.token("ed", iss.claims(nil))
	for range 3 {
		if _, err := v.VerifyToken(t.Context(), tok); err != nil {
			t.Fatalf("before revocation: %v", err)
		}
	}
	iss.revoke(claims["jti"].(string), time.Unix(claims["exp"].(int64), 0))
	took := waitFor(t, 5*time.Second, "revoked token refused", func() bool {
		_, err := v.VerifyToken(t.Context(), tok)
		return err != nil
	})
	t.Logf("revocation took effect after %s", took)
	_, err := v.VerifyToken(t.Context(), tok)
	if err == nil || err.(*Error).Reason != ReasonRevoked {
		t.Fatalf("revoked token: %v", err)
	}
	if rf, _ := rec.last(); rf.Reason != ReasonRevoked || rf.JTI != claims["jti"] {
		t.Errorf("refusal %+v", rf)
	}
	if _, err := v.VerifyToken(t.Context(), other); err != nil {
		t.Errorf("another token: %v", err)
	}
	// A verifier started after the revocation sees it at once.
	late := newVerifier(t, iss, nil, nil)
	if _, err := late.VerifyToken(t.Context(), tok); err == nil || err.(*Error).Reason != ReasonRevoked {
		t.Errorf("new verifier: %v", err)
	}
}

// TestRevocationFeedOutage: the verifier reconnects after the feed fails
// and picks up the revocations it missed.
func TestRevocationFeedOutage(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	v := newVerifier(t, iss, nil, func(c *Config) { c.RevocationWait = time.Second })
	claims := iss.claims(nil)
	tok := iss.token("ed", claims)
	iss.mu.Lock()
	iss.feedDown = true
	iss.mu.Unlock()
	hits := iss.feedHits.Load()
	waitFor(t, 5*time.Second, "feed retried", func() bool { return iss.feedHits.Load() > hits+1 })
	iss.revoke(claims["jti"].(string), time.Unix(claims["exp"].(int64), 0))
	if _, err := v.VerifyToken(t.Context(), tok); err != nil {
		t.Fatalf("token refused while the feed was down: %v", err)
	}
	iss.mu.Lock()
	iss.feedDown = false
	iss.mu.Unlock()
	waitFor(t, 10*time.Second, "revocation after reconnect", func() bool {
		_, err := v.VerifyToken(t.Context(), tok)
		return err != nil
	})
	if time.Since(v.LastRevocationSync()) > 5*time.Second {
		t.Errorf("last sync %s", v.LastRevocationSync())
	}
}

// TestKeyRotation: a key published ahead of use is found by refetching on
// its unknown kid; a key removed from the JWKS no longer verifies anything,
// neither its old (expired) tokens nor new ones signed with it.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	iss.mu.Lock()
	iss.maxAge = 1
	iss.mu.Unlock()
	rec := &recorder{}
	v := newVerifier(t, iss, rec, func(c *Config) { c.JWKSRefresh = time.Second })

	old := iss.token("ed", iss.claims(nil))
	if _, err := v.VerifyToken(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	iss.addKey("ed2", "EdDSA")
	fresh := iss.token("ed2", iss.claims(nil))
	if _, err := v.VerifyToken(t.Context(), fresh); err != nil {
		t.Fatalf("token of a newly published key: %v", err)
	}

	iss.unpublish("ed")
	iss.clock.Advance(6 * time.Minute) // every token of "ed" has expired
	waitFor(t, 5*time.Second, "key removal seen", func() bool { return !v.keys.has("ed") })
	forged := iss.token("ed", iss.claims(nil)) // the old key, still held by someone
	for name, tok := range map[string]string{"expired token of the removed key": old, "new token of the removed key": forged} {
		_, err := v.VerifyToken(t.Context(), tok)
		if err == nil || err.(*Error).Reason != ReasonUnknownKey {
			t.Errorf("%s: %v, want %s", name, err, ReasonUnknownKey)
		}
	}
	if _, err := v.VerifyToken(t.Context(), iss.token("ed2", iss.claims(nil))); err != nil {
		t.Errorf("token of the current key: %v", err)
	}
}

// TestUnknownKIDFloodIsRateLimited: many tokens with made-up kids cause
// at most one extra JWKS fetch per JWKSRefresh.
func TestUnknownKIDFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	before := iss.jwksHits.Load()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			tok := rawToken(t, header(t, map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": fmt.Sprintf("random-%d", i)}),
				iss.claims(nil), signer(t, "EdDSA", iss.key("ed").signer))
			if _, err := v.VerifyToken(context.Background(), tok); err == nil || err.(*Error).Reason != ReasonUnknownKey {
				t.Errorf("kid %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := iss.jwksHits.Load() - before; n > 1 {
		t.Errorf("%d JWKS fetches for 200 unknown kids, want at most 1", n)
	}
	rec.mu.Lock()
	n := len(rec.refusals)
	rec.mu.Unlock()
	if n != 200 {
		t.Errorf("%d refusals reported, want 200", n)
	}
}

// TestJWKSFiltering: keys that cannot verify an allowed algorithm are
// ignored, so tokens naming them are refused.
func TestJWKSFiltering(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	iss.mu.Lock()
	iss.extraJWKS = append(iss.extraJWKS,
		[]byte(`{"kty":"oct","kid":"hmac","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA","alg":"HS256"}`),
		[]byte(`{"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`),
		[]byte(`{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`),
	)
	iss.mu.Unlock()
	v := newVerifier(t, iss, nil, nil)
	for _, kid := range []string{"hmac", "enc"} {
		if v.keys.has(kid) {
			t.Errorf("key %q was kept", kid)
		}
	}
	// The repeated kid "ed" keeps the first (the issuer's real) key.
	if _, err := v.VerifyToken(t.Context(), iss.token("ed", iss.claims(nil))); err != nil {
		t.Errorf("real key: %v", err)
	}
	if _, err := v.VerifyToken(t.Context(), iss.token("ec", iss.claims(nil))); err != nil {
		t.Errorf("ES256 key: %v", err)
	}
	if _, err := v.VerifyToken(t.Context(), iss.token("rsa", iss.claims(nil))); err != nil {
		t.Errorf("PS256 key: %v", err)
	}
}

func TestMiddlewareAndScopes(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	var seen *Principal
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	})
	mux := http.NewServeMux()
	mux.Handle("/read", v.Middleware(v.RequireScopes("accounts:read")(h)))
	mux.Handle("/write", v.Middleware(v.RequireScopes("accounts:read", "accounts:write")(h)))
	mux.Handle("/standalone", v.RequireScopes("accounts:read")(h))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	tok := iss.token("ed", iss.claims(map[string]any{
		"auth_time": iss.clock.Now().Add(-time.Minute).Unix(),
		"act":       map[string]any{"sub": "svc_gateway", "act": map[string]any{"sub": "svc_edge"}},
		"aud":       []string{testAudience, "https://other.example.com"},
	}))
	for _, tc := range []struct {
		path      string
		authz     []string
		status    int
		challenge string
	}{
		{"/read", []string{"Bearer " + tok}, http.StatusNoContent, ""},
		{"/standalone", []string{"Bearer " + tok}, http.StatusNoContent, ""},
		{"/write", []string{"Bearer " + tok}, http.StatusForbidden, `Bearer error="insufficient_scope", scope="accounts:read accounts:write"`},
		{"/standalone", nil, http.StatusUnauthorized, "Bearer"},
	} {
		seen = nil
		resp, body := call(t, srv.Client(), "GET", srv.URL+tc.path, tc.authz, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d %q, want %d", tc.path, resp.StatusCode, body, tc.status)
		}
		if tc.challenge != "" && resp.Header.Get("WWW-Authenticate") != tc.challenge {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.path, resp.Header.Get("WWW-Authenticate"), tc.challenge)
		}
		if tc.status == http.StatusForbidden {
			if rf, _ := rec.last(); rf.Reason != ReasonInsufficientScope || rf.Subject != "usr_alice" || rf.Path != tc.path {
				t.Errorf("refusal %+v", rf)
			}
			if jsonField(t, body, "error") != "insufficient_scope" {
				t.Errorf("body %q", body)
			}
		}
		if tc.status != http.StatusNoContent {
			continue
		}
		switch {
		case seen == nil:
			t.Fatalf("%s: no principal in the context", tc.path)
		case seen.Subject != "usr_alice" || seen.ClientID != "cli_web" || !seen.HasScope("openid") || seen.HasScope("accounts"):
			t.Errorf("principal %+v", seen)
		case seen.Actor == nil || seen.Actor.Subject != "svc_gateway" || seen.Actor.Actor == nil || seen.Actor.Actor.Subject != "svc_edge":
			t.Errorf("actor chain %+v", seen.Actor)
		case len(seen.Audience) != 2 || seen.AuthTime.IsZero() || seen.Expiry.IsZero() || seen.IssuedAt.IsZero() || seen.JTI == "":
			t.Errorf("principal times/audience %+v", seen)
		case seen.Claims["client_id"] != "cli_web" || seen.Confirmation.Bound():
			t.Errorf("claims %v, cnf %+v", seen.Claims, seen.Confirmation)
		}
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Error("FromContext found a principal in an empty context")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	impostor := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			writeTestJSON(w, map[string]string{"issuer": iss.url, "jwks_uri": iss.url + "/jwks", "bulwark_revocation_feed_endpoint": iss.url + "/oauth2/revocations"})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(impostor.Close)
	var noFeedURL, noKeysURL string
	noFeed := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeTestJSON(w, map[string]string{"issuer": noFeedURL, "jwks_uri": iss.url + "/jwks"})
	}))
	noFeed.StartTLS()
	noFeedURL = noFeed.URL
	t.Cleanup(noFeed.Close)
	noKeys := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			writeTestJSON(w, map[string]any{"keys": []any{}})
			return
		}
		writeTestJSON(w, map[string]string{"issuer": noKeysURL, "jwks_uri": noKeysURL + "/jwks", "bulwark_revocation_feed_endpoint": noKeysURL + "/f"})
	}))
	noKeys.StartTLS()
	noKeysURL = noKeys.URL
	t.Cleanup(noKeys.Close)

	base := Config{Issuer: iss.url, Audience: testAudience, HTTPClient: iss.srv.Client()}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, "Issuer is required"},
		{"http issuer", func(c *Config) { c.Issuer = strings.Replace(iss.url, "https", "http", 1) }, "https"},
		{"no audience", func(c *Config) { c.Audience = "" }, "Audience"},
		{"alg none", func(c *Config) { c.Algorithms = []string{"EdDSA", "none"} }, `"none"`},
		{"HS256", func(c *Config) { c.Algorithms = []string{"HS256"} }, `"HS256"`},
		{"leeway too large", func(c *Config) { c.Leeway = 2 * time.Minute }, "Leeway"},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }, "Leeway"},
		{"wait too long", func(c *Config) { c.RevocationWait = time.Minute }, "RevocationWait"},
		{"metadata of another issuer", func(c *Config) { c.Issuer, c.HTTPClient = impostor.URL, impostor.Client() }, "not the configured issuer"},
		{"no revocation feed", func(c *Config) { c.Issuer, c.HTTPClient = noFeed.URL, noFeed.Client() }, "bulwark_revocation_feed_endpoint"},
		{"no usable keys", func(c *Config) { c.Issuer, c.HTTPClient = noKeys.URL, noKeys.Client() }, "no usable signing key"},
		{"untrusted TLS", func(c *Config) { c.HTTPClient = nil }, "discovery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tc.mod(&cfg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			v, err := New(ctx, cfg)
			if err == nil {
				t.Fatalf("New accepted the config: %+v", v.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}
