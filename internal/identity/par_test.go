package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// frontDPoPSigner returns a DPoP signer with a fresh key.
func frontDPoPSigner(t *testing.T) *dpop.Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dpopHeader returns a DPoP header for a POST to the PAR endpoint.
func (f *frontFixture) dpopHeader(s *dpop.Signer, nonce string) http.Header {
	f.t.Helper()
	proof, err := s.Proof(http.MethodPost, f.env.url+PathPAR, nonce, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return http.Header{"Dpop": {proof}}
}

// push sends a pushed authorization request. A confidential client
// authenticates with a fresh client assertion when authenticate is set;
// with a signer, the request carries a DPoP proof, and like a real client
// it retries once with the server's nonce when asked to.
func (f *frontFixture) push(q url.Values, authenticate bool, signer *dpop.Signer) (*http.Response, map[string]any) {
	f.t.Helper()
	for attempt := 0; ; attempt++ {
		form := url.Values{}
		for k, v := range q {
			form[k] = slices.Clone(v)
		}
		if authenticate {
			form.Set("client_assertion_type", ClientAssertionTypeJWT)
			form.Set("client_assertion", f.assertion(q.Get("client_id")))
		}
		var hdr http.Header
		if signer != nil {
			hdr = f.dpopHeader(signer, f.nonce)
		}
		resp, body := f.do(f.env.client(), http.MethodPost, f.env.url+PathPAR, form, hdr)
		var out map[string]any
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			f.t.Fatalf("PAR answer %d %q: %v", resp.StatusCode, body, err)
		}
		if n := resp.Header.Get(HeaderDPoPNonce); n != "" {
			f.nonce = n
		}
		if out["error"] != "use_dpop_nonce" || attempt > 0 {
			return resp, out
		}
	}
}

// mustPush pushes q for a FAPI client bound to signer and returns the
// request_uri.
func (f *frontFixture) mustPush(q url.Values, signer *dpop.Signer) string {
	f.t.Helper()
	resp, out := f.push(q, true, signer)
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("PAR: %d %v", resp.StatusCode, out)
	}
	uri, _ := out["request_uri"].(string)
	return uri
}

func TestPARThenAuthorize(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addFAPIClient("bank", "Bank")
		alice := f.addUser("alice")
		signer := frontDPoPSigner(t)
		q := frontAuthParams("bank")
		q.Set("resource", frontOtherAPI)
		resp, out := f.push(q, true, signer)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("PAR: %d %v %v", resp.StatusCode, out, resp.Header)
		}
		uri, _ := out["request_uri"].(string)
		if !strings.HasPrefix(uri, parURNPrefix) || out["expires_in"] != float64(60) {
			t.Fatalf("PAR answer %v", out)
		}
		// Only the pushed parameters count: the rest are ignored.
		b := f.browser()
		resp, page := f.authorize(b, url.Values{"client_id": {"bank"}, "request_uri": {uri}, "scope": {"openid profile"},
			"redirect_uri": {"https://evil.example/cb"}, "state": {"other"}, "response_type": {"token"}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, pathLogin) {
			t.Fatalf("authorize: %d\n%s", resp.StatusCode, page)
		}
		ck := resp.Cookies()
		if len(ck) != 1 || ck[0].Name != loginCookie || !ck[0].Secure || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteLaxMode || ck[0].Path != "/" {
			t.Errorf("login cookie %+v", ck)
		}
		loc := f.login(b, page, "alice")
		got := loc.Query()
		if !strings.HasPrefix(loc.String(), frontRedirect+"?") || got.Get("state") != q.Get("state") || got.Get("iss") != f.env.url || got.Get("code") == "" {
			t.Fatalf("redirect %s", loc)
		}
		var data, grantID string
		if err := db.QueryRowContext(f.ctx, "SELECT data, grant_id FROM identity_codes WHERE code_hash = ? AND client_id = ?",
			hashSecret(got.Get("code")), "bank").Scan(&data, &grantID); err != nil {
			t.Fatal(err)
		}
		var cd codeData
		if err := json.Unmarshal([]byte(data), &cd); err != nil {
			t.Fatal(err)
		}
		if cd.UserID != alice.ID || cd.RedirectURI != frontRedirect || !slices.Equal(cd.Scopes, []string{"openid", "payments"}) ||
			!slices.Equal(cd.Audiences, []string{frontOtherAPI}) || cd.CodeChallenge != q.Get("code_challenge") || cd.CodeChallengeMethod != "S256" ||
			cd.Nonce != "n-1" || cd.DPoPJKT != signer.Thumbprint() || !slices.Equal(cd.AMR, []string{"pwd"}) ||
			time.Since(time.Unix(cd.AuthTime, 0)) > time.Minute {
			t.Errorf("code data %+v", cd)
		}
		var subject, scope string
		if err := db.QueryRowContext(f.ctx, "SELECT subject, scope FROM identity_grants WHERE grant_id = ? AND client_id = ?", grantID, "bank").
			Scan(&subject, &scope); err != nil || subject != alice.ID || scope != "openid payments" {
			t.Errorf("grant %q %q %v", subject, scope, err)
		}
	})
}

func TestPARRefusals(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addFAPIClient("bank", "Bank")
		f.addPublicClient("spa", "SPA")
		signer, other := frontDPoPSigner(t), frontDPoPSigner(t)
		for _, tc := range []struct {
			name         string
			client       string
			mod          func(q url.Values)
			authenticate bool
			dpop         bool
			status       int
			code         string
		}{
			{"valid", "bank", nil, true, true, http.StatusCreated, ""},
			{"dpop_jkt without proof binds", "bank", func(q url.Values) { q.Set("dpop_jkt", signer.Thumbprint()) }, true, false, http.StatusCreated, ""},
			{"public client", "spa", nil, false, false, http.StatusCreated, ""},
			{"no client authentication", "bank", nil, false, true, http.StatusUnauthorized, "invalid_client"},
			{"request_uri inside PAR", "bank", func(q url.Values) { q.Set("request_uri", parURNPrefix+newSecret()) }, true, true, 400, "invalid_request"},
			{"request object", "bank", func(q url.Values) { q.Set("request", "a.b.c") }, true, true, 400, "request_not_supported"},
			{"response_type=token", "bank", func(q url.Values) { q.Set("response_type", "token") }, true, true, 400, "unsupported_response_type"},
			{"response_type=code id_token", "bank", func(q url.Values) { q.Set("response_type", "code id_token") }, true, true, 400, "unsupported_response_type"},
			{"PKCE plain", "bank", func(q url.Values) { q.Set("code_challenge_method", "plain") }, true, true, 400, "invalid_request"},
			{"no PKCE", "bank", func(q url.Values) { q.Del("code_challenge") }, true, true, 400, "invalid_request"},
			{"unregistered redirect_uri", "bank", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }, true, true, 400, "invalid_request"},
			{"no redirect_uri", "bank", func(q url.Values) { q.Del("redirect_uri") }, true, true, 400, "invalid_request"},
			{"scope not allowed", "bank", func(q url.Values) { q.Set("scope", "openid admin") }, true, true, 400, "invalid_scope"},
			{"resource not allowed", "bank", func(q url.Values) { q.Set("resource", "https://evil.example") }, true, true, 400, "invalid_target"},
			{"duplicate state", "bank", func(q url.Values) { q.Add("state", "again") }, true, true, 400, "invalid_request"},
			{"state too long", "bank", func(q url.Values) { q.Set("state", strings.Repeat("s", maxStateLen+1)) }, true, true, 400, "invalid_request"},
			{"DPoP client without binding", "bank", nil, true, false, 400, "invalid_request"},
			{"dpop_jkt of another key", "bank", func(q url.Values) { q.Set("dpop_jkt", other.Thumbprint()) }, true, true, 400, "invalid_dpop_proof"},
			{"malformed dpop_jkt", "bank", func(q url.Values) { q.Set("dpop_jkt", "x") }, true, false, 400, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q := frontAuthParams(tc.client)
				if tc.mod != nil {
					tc.mod(q)
				}
				var proofs *dpop.Signer
				if tc.dpop {
					proofs = signer
				}
				resp, out := f.push(q, tc.authenticate, proofs)
				if resp.StatusCode != tc.status || (tc.code != "" && out["error"] != tc.code) {
					t.Errorf("PAR: %d %v, want %d %s", resp.StatusCode, out, tc.status, tc.code)
				}
				if tc.code != "" && out["request_uri"] != nil {
					t.Errorf("refused PAR gave a request_uri: %v", out)
				}
			})
		}
		// The body must be a bounded form.
		for _, tc := range []struct {
			name, contentType, body string
		}{
			{"JSON body", "application/json", `{"client_id":"spa"}`},
			{"oversized body", "application/x-www-form-urlencoded", "client_id=spa&state=" + strings.Repeat("a", maxFormBytes)},
			{"malformed form", "application/x-www-form-urlencoded", "client_id=spa&state=%zz"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, f.env.url+PathPAR, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", tc.contentType)
				resp, err := f.env.client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var out map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_request" {
					t.Errorf("%d %v", resp.StatusCode, out)
				}
			})
		}
	})
}

func TestPARRequestURIIsSingleUseShortLivedAndBound(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addFAPIClient("bank", "Bank")
		f.addFAPIClient("other-bank", "Other bank")
		signer := frontDPoPSigner(t)
		open := func(client, uri string) int {
			resp, page := f.authorize(f.browser(), url.Values{"client_id": {client}, "request_uri": {uri}})
			if resp.StatusCode != http.StatusOK {
				frontErrorPage(t, resp, page, http.StatusBadRequest)
				if !strings.Contains(page, "invalid_request_uri") {
					t.Errorf("error page without invalid_request_uri:\n%s", page)
				}
			}
			return resp.StatusCode
		}

		uri := f.mustPush(frontAuthParams("bank"), signer)
		if got := open("other-bank", uri); got != http.StatusBadRequest {
			t.Errorf("another client's request_uri: %d", got)
		}
		if got := open("bank", uri); got != http.StatusOK {
			t.Errorf("first use: %d", got)
		}
		if got := open("bank", uri); got != http.StatusBadRequest {
			t.Errorf("reuse: %d", got)
		}

		// Concurrent uses: exactly one wins.
		uri = f.mustPush(frontAuthParams("bank"), signer)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins int
		)
		for range 8 {
			b := f.browser()
			wg.Go(func() {
				// No t.Fatal off the test goroutine.
				resp, err := b.Get(f.env.url + PathAuthorize + "?" + url.Values{"client_id": {"bank"}, "request_uri": {uri}}.Encode())
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Errorf("%d concurrent uses of one request_uri succeeded, want 1", wins)
		}

		// Last, as it moves the server's clock past the DPoP proofs' window.
		uri = f.mustPush(frontAuthParams("bank"), signer)
		f.env.clock.Advance(f.env.srv.cfg.PARTTL + time.Second)
		if got := open("bank", uri); got != http.StatusBadRequest {
			t.Errorf("expired request_uri: %d", got)
		}
		if got := open("bank", parURNPrefix+"short"); got != http.StatusBadRequest {
			t.Errorf("malformed request_uri: %d", got)
		}
	})
}

func TestPARDPoPNonce(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db, func(c *Config) { c.DPoPNonce = true })
		f.addFAPIClient("bank", "Bank")
		signer := frontDPoPSigner(t)
		pushWith := func(nonce string) (*http.Response, string) {
			form := frontAuthParams("bank")
			form.Set("client_assertion_type", ClientAssertionTypeJWT)
			form.Set("client_assertion", f.assertion("bank"))
			return f.do(f.env.client(), http.MethodPost, f.env.url+PathPAR, form, f.dpopHeader(signer, nonce))
		}
		resp, body := pushWith("")
		nonce := resp.Header.Get(HeaderDPoPNonce)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"use_dpop_nonce"`) || nonce == "" {
			t.Fatalf("proof without nonce: %d %s nonce %q", resp.StatusCode, body, nonce)
		}
		resp, body = pushWith(nonce)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get(HeaderDPoPNonce) == "" {
			t.Fatalf("proof with nonce: %d %s", resp.StatusCode, body)
		}
	})
}
