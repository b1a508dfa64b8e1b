package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// frontFixture drives the front channel (PAR, authorize, login, consent)
// of a test server over HTTP, like a client and a browser would.
type frontFixture struct {
	t   *testing.T
	env *testEnv
	ctx context.Context
	// key signs the private_key_jwt assertions of every confidential
	// client the fixture registers.
	key ed25519.PrivateKey
	// nonce is the latest DPoP-Nonce the server sent.
	nonce string
}

// Redirect URIs and audiences of the fixture's clients.
const (
	frontRedirect = "https://app.example/cb"
	frontAPI      = "https://api.example"
	frontOtherAPI = "https://ledger.example"
	frontPassword = "correct horse battery staple"
)

func newFrontFixture(t *testing.T, db *store.DB, opts ...func(*Config)) *frontFixture {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &frontFixture{t: t, env: newTestEnv(t, db, opts...), ctx: context.Background(), key: key}
}

// addFAPIClient registers a FAPI 2.0 client: private_key_jwt, PAR
// required, DPoP-bound.
func (f *frontFixture) addFAPIClient(id, name string) *Client {
	f.t.Helper()
	c := &Client{ID: id, Name: name, Profile: ProfileFAPI2, TokenEndpointAuthMethod: AuthPrivateKeyJWT,
		JWKS:         &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: f.key.Public(), KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}},
		RedirectURIs: []string{frontRedirect}, GrantTypes: []string{GrantAuthorizationCode, GrantRefreshToken},
		Scopes: []string{"openid", "profile", "payments"}, Audiences: []string{frontAPI, frontOtherAPI}, DPoPBoundAccessTokens: true}
	if err := f.env.srv.clients.create(f.ctx, c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// addPublicClient registers a public OAuth 2.0 client (PKCE only, no PAR).
func (f *frontFixture) addPublicClient(id, name string) *Client {
	f.t.Helper()
	c := &Client{ID: id, Name: name, Profile: ProfileOAuth2, TokenEndpointAuthMethod: AuthNone,
		RedirectURIs: []string{frontRedirect, "http://127.0.0.1:8765/cb?app=1"}, GrantTypes: []string{GrantAuthorizationCode},
		Scopes: []string{"openid", "profile", "payments"}, Audiences: []string{frontAPI, frontOtherAPI}}
	if err := f.env.srv.clients.create(f.ctx, c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// addUser creates a user with frontPassword.
func (f *frontFixture) addUser(username string) *User {
	f.t.Helper()
	u, err := f.env.srv.CreateUser(f.ctx, NewUser{Username: username, Password: frontPassword, Name: "Test " + username})
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

// assertion returns a private_key_jwt client assertion for clientID.
func (f *frontFixture) assertion(clientID string) string {
	f.t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: f.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		f.t.Fatal(err)
	}
	now := f.env.clock.Now()
	tok, err := jwt.Signed(signer).Claims(map[string]any{"iss": clientID, "sub": clientID, "aud": f.env.url,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": newID("jti")}).Serialize()
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// frontPKCE returns a PKCE verifier and its S256 challenge.
func frontPKCE() (verifier, challenge string) {
	verifier = newSecret()
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// frontAuthParams returns valid authorization request parameters for client.
func frontAuthParams(client string) url.Values {
	_, challenge := frontPKCE()
	return url.Values{"client_id": {client}, "response_type": {"code"}, "redirect_uri": {frontRedirect},
		"scope": {"openid payments"}, "state": {"st-" + newID("s")}, "nonce": {"n-1"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}}
}

// do sends a request with an optional form body and returns the response
// with its body read.
func (f *frontFixture) do(c *http.Client, method, target string, form url.Values, hdr http.Header) (*http.Response, string) {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, string(b)
}

// browser returns an HTTP client with a cookie jar that does not follow
// redirects.
func (f *frontFixture) browser() *http.Client {
	f.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	c := f.env.client()
	c.Jar = jar
	return c
}

// authorize sends the browser to the authorization endpoint.
func (f *frontFixture) authorize(b *http.Client, q url.Values) (*http.Response, string) {
	f.t.Helper()
	return f.do(b, http.MethodGet, f.env.url+PathAuthorize+"?"+q.Encode(), nil, nil)
}

var frontCSRFField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// frontCSRF returns the CSRF token of a page's form.
func frontCSRF(t *testing.T, page string) string {
	t.Helper()
	m := frontCSRFField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf_token in page:\n%s", page)
	}
	return m[1]
}

// submit posts a form of the login flow with the page's CSRF token.
func (f *frontFixture) submit(b *http.Client, path, page string, form url.Values) (*http.Response, string) {
	f.t.Helper()
	form.Set("csrf_token", frontCSRF(f.t, page))
	return f.do(b, http.MethodPost, f.env.url+path, form, nil)
}

// login completes the login and consent steps from the login page and
// returns the redirect to the client.
func (f *frontFixture) login(b *http.Client, loginPage, username string) *url.URL {
	f.t.Helper()
	resp, page := f.submit(b, pathLogin, loginPage, url.Values{"username": {username}, "password": {frontPassword}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, pathConsent) {
		f.t.Fatalf("login: %d\n%s", resp.StatusCode, page)
	}
	resp, _ = f.submit(b, pathConsent, page, url.Values{"action": {"approve"}})
	return frontRedirectOf(f.t, resp)
}

// frontRedirectOf returns the Location of a 303 response.
func frontRedirectOf(t *testing.T, resp *http.Response) *url.URL {
	t.Helper()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d, want a 303 redirect", resp.StatusCode)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// wantErrorRedirect checks an error redirect to the client.
func (f *frontFixture) wantErrorRedirect(resp *http.Response, redirectURI, code, state string) {
	f.t.Helper()
	u := frontRedirectOf(f.t, resp)
	q := u.Query()
	if base, _, _ := strings.Cut(u.String(), "?"); base != strings.Split(redirectURI, "?")[0] {
		f.t.Errorf("redirected to %s, want %s", u, redirectURI)
	}
	if q.Get("error") != code || q.Get("iss") != f.env.url || q.Get("state") != state {
		f.t.Errorf("redirect query %v: want error=%s iss=%s state=%q", q, code, f.env.url, state)
	}
	if q.Has("code") {
		f.t.Errorf("error redirect carries a code: %v", q)
	}
}

// frontErrorPage checks an HTML error page that does not redirect.
func frontErrorPage(t *testing.T, resp *http.Response, page string, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d\n%s", resp.StatusCode, status, page)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		t.Errorf("error page redirects to %q", loc)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("content type %q", ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestAuthorizeNeverRedirectsToUntrustedURIs(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "Single-page app")
		with := func(mod func(q url.Values)) string {
			q := frontAuthParams("spa")
			mod(q)
			return q.Encode()
		}
		for _, tc := range []struct {
			name, query string
		}{
			{"unknown client", with(func(q url.Values) { q.Set("client_id", "nobody") })},
			{"no client_id", with(func(q url.Values) { q.Del("client_id") })},
			{"two client_ids", with(func(q url.Values) { q.Add("client_id", "spa") })},
			{"unregistered redirect_uri", with(func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") })},
			{"redirect_uri prefix", with(func(q url.Values) { q.Set("redirect_uri", frontRedirect+"/more") })},
			{"redirect_uri with extra query", with(func(q url.Values) { q.Set("redirect_uri", frontRedirect+"?x=1") })},
			{"no redirect_uri", with(func(q url.Values) { q.Del("redirect_uri") })},
			{"two redirect_uris", with(func(q url.Values) { q.Add("redirect_uri", "https://evil.example/cb") })},
			{"malformed query", "client_id=spa&redirect_uri=%zz"},
			{"unknown request_uri", with(func(q url.Values) { q.Set("request_uri", parURNPrefix+newSecret()) })},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, page := f.do(f.browser(), http.MethodGet, f.env.url+PathAuthorize+"?"+tc.query, nil, nil)
				frontErrorPage(t, resp, page, http.StatusBadRequest)
				if strings.Contains(page, "evil.example") {
					t.Errorf("page echoes the untrusted URI:\n%s", page)
				}
			})
		}
	})
}

func TestAuthorizeErrorsRedirectWithIss(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "Single-page app")
		f.addFAPIClient("bank", "Bank")
		for _, tc := range []struct {
			name   string
			client string
			mod    func(q url.Values)
			code   string
		}{
			{"response_type=token", "spa", func(q url.Values) { q.Set("response_type", "token") }, "unsupported_response_type"},
			{"response_type=id_token", "spa", func(q url.Values) { q.Set("response_type", "id_token") }, "unsupported_response_type"},
			{"hybrid", "spa", func(q url.Values) { q.Set("response_type", "code id_token") }, "unsupported_response_type"},
			{"no response_type", "spa", func(q url.Values) { q.Del("response_type") }, "invalid_request"},
			{"no PKCE", "spa", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, "invalid_request"},
			{"PKCE plain", "spa", func(q url.Values) { q.Set("code_challenge_method", "plain") }, "invalid_request"},
			{"PKCE method omitted", "spa", func(q url.Values) { q.Del("code_challenge_method") }, "invalid_request"},
			{"short challenge", "spa", func(q url.Values) { q.Set("code_challenge", "abc") }, "invalid_request"},
			{"scope not allowed", "spa", func(q url.Values) { q.Set("scope", "openid admin") }, "invalid_scope"},
			{"resource not allowed", "spa", func(q url.Values) { q.Add("resource", "https://evil.example") }, "invalid_target"},
			{"request object", "spa", func(q url.Values) { q.Set("request", "eyJhbGciOiJub25lIn0.e30.") }, "request_not_supported"},
			{"prompt=none", "spa", func(q url.Values) { q.Set("prompt", "none") }, "login_required"},
			{"duplicate scope", "spa", func(q url.Values) { q.Add("scope", "profile") }, "invalid_request"},
			{"response_mode fragment", "spa", func(q url.Values) { q.Set("response_mode", "fragment") }, "invalid_request"},
			{"FAPI client without PAR", "bank", func(url.Values) {}, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q := frontAuthParams(tc.client)
				tc.mod(q)
				resp, _ := f.authorize(f.browser(), q)
				f.wantErrorRedirect(resp, frontRedirect, tc.code, q.Get("state"))
			})
		}
		// A redirect URI with a query keeps it.
		q := frontAuthParams("spa")
		q.Set("redirect_uri", "http://127.0.0.1:8765/cb?app=1")
		q.Set("response_type", "token")
		resp, _ := f.authorize(f.browser(), q)
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "http://127.0.0.1:8765/cb?app=1&") {
			t.Errorf("Location %q", loc)
		}
	})
}

func TestAuthorizePagesEscapeHTML(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		evil := `<script>alert("x")</script>`
		f.addPublicClient("spa", evil)
		f.addUser("alice")
		b := f.browser()
		q := frontAuthParams("spa")
		q.Set("state", `"><img src=x onerror=alert(1)>`)
		resp, page := f.authorize(b, q)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("authorize: %d\n%s", resp.StatusCode, page)
		}
		for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Cache-Control"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("login page without %s", h)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "script-src") || !strings.Contains(csp, "form-action 'self' https://app.example") {
			t.Errorf("CSP %q", csp)
		}
		if strings.Contains(page, evil) || strings.Contains(page, "<img") || !strings.Contains(page, "&lt;script&gt;") {
			t.Errorf("client name not escaped:\n%s", page)
		}
		if strings.Contains(page, "<script") {
			t.Errorf("page has a script element:\n%s", page)
		}
		// A failed login echoes the username, escaped.
		resp, page = f.submit(b, pathLogin, page, url.Values{"username": {`"><b>x</b>`}, "password": {"wrong"}})
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(page, "<b>x</b>") || !strings.Contains(page, "&lt;b&gt;") {
			t.Errorf("failed login page %d:\n%s", resp.StatusCode, page)
		}
		resp, page = f.submit(b, pathLogin, page, url.Values{"username": {"alice"}, "password": {frontPassword}})
		if resp.StatusCode != http.StatusOK || strings.Contains(page, evil) || !strings.Contains(page, "payments") {
			t.Fatalf("consent page %d:\n%s", resp.StatusCode, page)
		}
		resp, _ = f.submit(b, pathConsent, page, url.Values{"action": {"approve"}})
		if got := frontRedirectOf(t, resp).Query().Get("state"); got != q.Get("state") {
			t.Errorf("state %q, want %q", got, q.Get("state"))
		}
		// The stylesheet the pages use is served.
		resp, css := f.do(b, http.MethodGet, f.env.url+pathStylesheet, nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || css == "" {
			t.Errorf("stylesheet: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}

func TestFormActionSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"https://app.example/cb", "https://app.example"},
		{"https://app.example:8443/cb?x=1", "https://app.example:8443"},
		{"http://127.0.0.1:8765/cb", "http://127.0.0.1:8765"},
		{"http://[::1]:8765/cb", "http://[::1]:8765"},
		{"com.example.app:/oauth", "com.example.app:"},
		{"https://a;b/cb", ""},
		{"https://a b/cb", ""},
		{"", ""},
	} {
		if got := formActionSource(tc.in); got != tc.want {
			t.Errorf("formActionSource(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// frontFuzzClient is the registration FuzzParseAuthorizeRequest validates
// against.
var frontFuzzClient = &Client{ID: "fuzz", RedirectURIs: []string{frontRedirect}, GrantTypes: []string{GrantAuthorizationCode},
	Scopes: []string{"openid", "payments"}, Audiences: []string{frontAPI, frontOtherAPI}}

func FuzzParseAuthorizeRequest(f *testing.F) {
	_, challenge := frontPKCE()
	f.Add(frontAuthParams("fuzz").Encode())
	f.Add("client_id=fuzz&response_type=code&redirect_uri=" + url.QueryEscape(frontRedirect) + "&code_challenge=" + challenge +
		"&code_challenge_method=S256&resource=" + url.QueryEscape(frontOtherAPI) + "&resource=" + url.QueryEscape(frontAPI))
	f.Add("response_type=token&scope=openid%20openid&state=%ff&prompt=none%20login")
	f.Add("request=x&request=y&dpop_jkt=" + challenge)
	f.Fuzz(func(t *testing.T, query string) {
		form, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		req, err := parseAuthorizeParams(form, frontFuzzClient)
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) || oe.Code == "" || strings.ContainsAny(oe.Description, "\"\\\n") {
				t.Fatalf("error %v is not an OAuth error fit for a redirect", err)
			}
			return
		}
		switch {
		case req.ClientID != "fuzz", !slices.Contains(frontFuzzClient.RedirectURIs, req.RedirectURI),
			req.CodeChallengeMethod != "S256", !validS256.MatchString(req.CodeChallenge),
			len(req.State) > maxStateLen, len(req.Nonce) > maxNonceLen, len(req.Audiences) == 0:
			t.Fatalf("accepted an invalid request: %+v", req)
		}
		for _, s := range req.Scopes {
			if !slices.Contains(frontFuzzClient.Scopes, s) {
				t.Fatalf("accepted scope %q", s)
			}
		}
		for _, a := range req.Audiences {
			if !slices.Contains(frontFuzzClient.Audiences, a) {
				t.Fatalf("accepted audience %q", a)
			}
		}
		// What a PAR stores must come back the same.
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var back authzRequest
		if err := json.Unmarshal(b, &back); err != nil || back.State != req.State || back.Nonce != req.Nonce {
			t.Fatalf("request does not survive storage: %+v vs %+v (%v)", req, back, err)
		}
	})
}
