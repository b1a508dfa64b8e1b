package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// frontLogonEvents returns the Authentication/Logon events with status.
func frontLogonEvents(env *testEnv, status int) []audit.Event {
	var out []audit.Event
	for _, e := range env.auditEvents() {
		if e.ClassUID == classAuthentication && e.ActivityID == actLogon && e.StatusID == status {
			out = append(out, e)
		}
	}
	return out
}

// frontReasons returns the status details of events.
func frontReasons(events []audit.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.StatusDetail)
	}
	return out
}

// startLogin opens the login page for the public client "spa".
func (f *frontFixture) startLogin(b *http.Client) (url.Values, string) {
	f.t.Helper()
	q := frontAuthParams("spa")
	resp, page := f.authorize(b, q)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, pathLogin) {
		f.t.Fatalf("authorize: %d\n%s", resp.StatusCode, page)
	}
	return q, page
}

// password submits the login form.
func (f *frontFixture) password(b *http.Client, page, username, password string) (*http.Response, string) {
	f.t.Helper()
	return f.submit(b, pathLogin, page, url.Values{"username": {username}, "password": {password}})
}

func TestLoginWithRealOAuthClient(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "Single-page app")
		alice := f.addUser("alice")
		conf := oauth2.Config{ClientID: "spa", RedirectURL: frontRedirect, Scopes: []string{"openid", "payments"},
			Endpoint: oauth2.Endpoint{AuthURL: f.env.url + PathAuthorize, TokenURL: f.env.url + PathToken, AuthStyle: oauth2.AuthStyleInParams}}
		verifier := oauth2.GenerateVerifier()
		authURL := conf.AuthCodeURL("xyz", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "n-0"))

		b := f.browser()
		resp, page := f.do(b, http.MethodGet, authURL, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("authorize: %d\n%s", resp.StatusCode, page)
		}
		resp, page = f.password(b, page, "Alice", frontPassword) // usernames are case-insensitive
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Single-page app") || !strings.Contains(page, "payments") || !strings.Contains(page, frontAPI) {
			t.Fatalf("consent page: %d\n%s", resp.StatusCode, page)
		}
		consentPage := page
		resp, _ = f.submit(b, pathConsent, page, url.Values{"action": {"approve"}})
		loc := frontRedirectOf(t, resp)
		q := loc.Query()
		if q.Get("state") != "xyz" || q.Get("iss") != f.env.url || q.Get("code") == "" || !strings.HasPrefix(loc.String(), frontRedirect+"?") {
			t.Fatalf("redirect %s", loc)
		}
		// The session is over: the consent cannot be submitted twice.
		resp, page = f.submit(b, pathConsent, consentPage, url.Values{"action": {"approve"}})
		frontErrorPage(t, resp, page, http.StatusBadRequest)
		var n int
		if err := db.QueryRowContext(f.ctx, "SELECT COUNT(*) FROM identity_login_sessions").Scan(&n); err != nil || n != 0 {
			t.Errorf("%d login sessions left (%v)", n, err)
		}

		// The code redeems at the token endpoint with the PKCE verifier.
		ctx := context.WithValue(f.ctx, oauth2.HTTPClient, f.env.client())
		tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		payload, err := f.env.srv.keys.verify(tok.AccessToken, TypAccessToken)
		if err != nil {
			t.Fatal(err)
		}
		var claims struct {
			Sub      string `json:"sub"`
			ClientID string `json:"client_id"`
			Scope    string `json:"scope"`
		}
		if err := json.Unmarshal(payload, &claims); err != nil || claims.Sub != alice.ID || claims.ClientID != "spa" || claims.Scope != "openid payments" {
			t.Errorf("access token claims %+v (%v)", claims, err)
		}

		ok := frontLogonEvents(f.env, audit.StatusSuccess)
		if len(ok) != 1 || ok[0].Actor == nil || ok[0].Actor.User == nil || ok[0].Actor.User.UID != alice.ID || ok[0].Actor.AppUID != "spa" {
			t.Fatalf("logon events %+v", ok)
		}
		raw, _ := json.Marshal(f.env.auditEvents())
		if strings.Contains(string(raw), frontPassword) || strings.Contains(string(raw), q.Get("code")) || strings.Contains(string(raw), verifier) {
			t.Error("the audit log holds a password, code or verifier")
		}
	})
}

func TestLoginDenyAndStepOrder(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "SPA")
		f.addUser("alice")

		b := f.browser()
		q, page := f.startLogin(b)
		_, page = f.password(b, page, "alice", frontPassword)
		resp, _ := f.submit(b, pathConsent, page, url.Values{"action": {"deny"}})
		f.wantErrorRedirect(resp, frontRedirect, "access_denied", q.Get("state"))
		var n int
		if err := db.QueryRowContext(f.ctx, "SELECT COUNT(*) FROM identity_codes").Scan(&n); err != nil || n != 0 {
			t.Errorf("%d codes after a denial (%v)", n, err)
		}

		// Consent before the password: refused, and the session ends.
		b = f.browser()
		_, page = f.startLogin(b)
		resp, body := f.submit(b, pathConsent, page, url.Values{"action": {"approve"}})
		frontErrorPage(t, resp, body, http.StatusBadRequest)
		resp, body = f.password(b, page, "alice", frontPassword)
		frontErrorPage(t, resp, body, http.StatusBadRequest)

		// An unknown action is refused.
		b = f.browser()
		_, page = f.startLogin(b)
		_, page = f.password(b, page, "alice", frontPassword)
		resp, body = f.submit(b, pathConsent, page, url.Values{"action": {"maybe"}})
		frontErrorPage(t, resp, body, http.StatusBadRequest)
	})
}

func TestLoginCSRFAndSession(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "SPA")
		f.addUser("alice")
		post := func(b *http.Client, form url.Values) (*http.Response, string) {
			return f.do(b, http.MethodPost, f.env.url+pathLogin, form, nil)
		}
		creds := func(csrf []string) url.Values {
			v := url.Values{"username": {"alice"}, "password": {frontPassword}}
			if csrf != nil {
				v["csrf_token"] = csrf
			}
			return v
		}
		b := f.browser()
		_, page := f.startLogin(b)
		token := frontCSRF(t, page)
		for _, tc := range []struct {
			name string
			csrf []string
		}{
			{"missing", nil},
			{"empty", []string{""}},
			{"wrong", []string{newSecret()}},
			{"twice", []string{token, token}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := post(b, creds(tc.csrf))
				frontErrorPage(t, resp, body, http.StatusForbidden)
			})
		}
		if got := frontReasons(frontLogonEvents(f.env, audit.StatusFailure)); len(got) != 4 || slices.ContainsFunc(got, func(r string) bool { return r != "csrf_token_invalid" }) {
			t.Errorf("CSRF refusals audited as %v", got)
		}
		// Another browser's token does not fit this session.
		other := f.browser()
		_, otherPage := f.startLogin(other)
		resp, body := post(b, creds([]string{frontCSRF(t, otherPage)}))
		frontErrorPage(t, resp, body, http.StatusForbidden)
		// Without the session cookie the token is worthless.
		resp, body = post(f.env.client(), creds([]string{token}))
		frontErrorPage(t, resp, body, http.StatusBadRequest)
		// The right token still works after all that.
		resp, body = post(b, creds([]string{token}))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, pathConsent) {
			t.Fatalf("login: %d\n%s", resp.StatusCode, body)
		}
		// A session expires.
		b = f.browser()
		_, page = f.startLogin(b)
		f.env.clock.Advance(f.env.srv.cfg.LoginTTL + time.Second)
		resp, body = f.password(b, page, "alice", frontPassword)
		frontErrorPage(t, resp, body, http.StatusBadRequest)
	})
}

func TestLoginLockout(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db, func(c *Config) { c.MaxFailures, c.LockoutDuration = 3, 5*time.Minute })
		f.addPublicClient("spa", "SPA")
		alice := f.addUser("alice")
		b := f.browser()
		_, page := f.startLogin(b)
		for i := range 3 {
			resp, body := f.password(b, page, "alice", "wrong password "+string(rune('a'+i)))
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Sign-in failed") {
				t.Fatalf("failure %d: %d\n%s", i, resp.StatusCode, body)
			}
		}
		// Locked: the right password is refused too, with the same answer.
		resp, body := f.password(b, page, "alice", frontPassword)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Sign-in failed") {
			t.Fatalf("locked account: %d\n%s", resp.StatusCode, body)
		}
		u, err := f.env.srv.GetUser(f.ctx, alice.ID)
		if err != nil || u.LockedUntil.IsZero() {
			t.Fatalf("user %+v %v", u, err)
		}
		if got := frontReasons(frontLogonEvents(f.env, audit.StatusFailure)); !slices.Equal(got, []string{"invalid_password", "invalid_password", "invalid_password", "locked"}) {
			t.Errorf("failures audited as %v", got)
		}
		if n := f.env.countEvents(classAccountChange, actLock, audit.StatusSuccess); n != 1 {
			t.Errorf("%d lock events", n)
		}
		// An unknown user gets the same answer.
		resp, unknown := f.password(b, page, "mallory", frontPassword)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(unknown, "Sign-in failed") {
			t.Errorf("unknown user: %d", resp.StatusCode)
		}
		// The lock ends.
		f.env.clock.Advance(5*time.Minute + time.Second)
		b = f.browser()
		_, page = f.startLogin(b)
		resp, body = f.password(b, page, "alice", frontPassword)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, pathConsent) {
			t.Fatalf("after the lock: %d\n%s", resp.StatusCode, body)
		}
		// An administrator can unlock early.
		b = f.browser()
		_, page = f.startLogin(b)
		for range 3 {
			f.password(b, page, "alice", "wrong password!!")
		}
		if resp, _ = f.password(b, page, "alice", frontPassword); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("not locked again: %d", resp.StatusCode)
		}
		if err := f.env.srv.UnlockUser(f.ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if resp, body = f.password(b, page, "alice", frontPassword); resp.StatusCode != http.StatusOK {
			t.Fatalf("after unlock: %d\n%s", resp.StatusCode, body)
		}
	})
}

func TestLoginBackoff(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db, func(c *Config) { c.BackoffBase, c.MaxFailures, c.LoginTTL = time.Minute, 10, time.Hour })
		f.addPublicClient("spa", "SPA")
		f.addUser("alice")
		b := f.browser()
		_, page := f.startLogin(b)
		try := func(password string, want int) {
			t.Helper()
			if resp, body := f.password(b, page, "alice", password); resp.StatusCode != want {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, want, body)
			}
		}
		try("wrong password 1", http.StatusUnauthorized)
		try(frontPassword, http.StatusUnauthorized) // within 1 min of the failure: not even checked
		f.env.clock.Advance(61 * time.Second)
		try("wrong password 2", http.StatusUnauthorized)
		f.env.clock.Advance(61 * time.Second)
		try(frontPassword, http.StatusUnauthorized) // the second delay is 2 min
		f.env.clock.Advance(60 * time.Second)
		try(frontPassword, http.StatusOK)
		want := []string{"invalid_password", "backoff", "invalid_password", "backoff"}
		if got := frontReasons(frontLogonEvents(f.env, audit.StatusFailure)); !slices.Equal(got, want) {
			t.Errorf("failures audited as %v, want %v", got, want)
		}
	})
}

func TestLoginDisabledUser(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "SPA")
		f.addUser("alice")
		if err := f.env.srv.DisableUser(f.ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		b := f.browser()
		_, page := f.startLogin(b)
		if resp, body := f.password(b, page, "alice", frontPassword); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("disabled user: %d\n%s", resp.StatusCode, body)
		}
		if got := frontReasons(frontLogonEvents(f.env, audit.StatusFailure)); !slices.Equal(got, []string{"disabled"}) {
			t.Errorf("audited as %v", got)
		}
	})
}

// frontTOTPCode returns the TOTP code of secret at t.
func frontTOTPCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// frontEnroll enrolls TOTP for username and returns the secret.
func (f *frontFixture) frontEnroll(username string) string {
	f.t.Helper()
	u, err := f.env.srv.EnrollTOTP(f.ctx, username)
	if err != nil {
		f.t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(u)
	if err != nil {
		f.t.Fatal(err)
	}
	return key.Secret()
}

func TestLoginWithTOTP(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		f.addPublicClient("spa", "SPA")
		alice := f.addUser("alice")
		secret := f.frontEnroll("alice")

		b := f.browser()
		_, page := f.startLogin(b)
		resp, page := f.password(b, page, "alice", frontPassword)
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, pathLoginTOTP) {
			t.Fatalf("after the password: %d\n%s", resp.StatusCode, page)
		}
		now := f.env.clock.Now()
		good := frontTOTPCode(t, secret, now)
		wrong := frontTOTPCode(t, secret, now.Add(-time.Hour))
		for _, c := range []string{frontTOTPCode(t, secret, now.Add(-30*time.Second)), frontTOTPCode(t, secret, now.Add(30*time.Second))} {
			if c == wrong {
				wrong = "abcdef" // vanishingly unlikely, but never flaky
			}
		}
		if wrong == good {
			wrong = "abcdef"
		}
		resp, body := f.submit(b, pathLoginTOTP, page, url.Values{"code": {wrong}})
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, pathLoginTOTP) {
			t.Fatalf("wrong code: %d\n%s", resp.StatusCode, body)
		}
		resp, body = f.submit(b, pathLoginTOTP, page, url.Values{"code": {good}})
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, pathConsent) {
			t.Fatalf("right code: %d\n%s", resp.StatusCode, body)
		}
		resp, _ = f.submit(b, pathConsent, body, url.Values{"action": {"approve"}})
		code := frontRedirectOf(t, resp).Query().Get("code")
		var data string
		if err := db.QueryRowContext(f.ctx, "SELECT data FROM identity_codes WHERE code_hash = ?", hashSecret(code)).Scan(&data); err != nil {
			t.Fatal(err)
		}
		var cd codeData
		if err := json.Unmarshal([]byte(data), &cd); err != nil || !slices.Equal(cd.AMR, []string{"pwd", "otp"}) || cd.UserID != alice.ID {
			t.Errorf("code data %+v (%v)", cd, err)
		}
		var failed int
		if err := db.QueryRowContext(f.ctx, "SELECT failed_logins FROM identity_users WHERE user_id = ?", alice.ID).Scan(&failed); err != nil || failed != 0 {
			t.Errorf("failed_logins %d after a complete login (%v)", failed, err)
		}

		// The same code cannot log in again.
		b = f.browser()
		_, page = f.startLogin(b)
		_, page = f.password(b, page, "alice", frontPassword)
		resp, body = f.submit(b, pathLoginTOTP, page, url.Values{"code": {good}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replayed code: %d\n%s", resp.StatusCode, body)
		}
		// Nor can the consent step be skipped.
		resp, body = f.submit(b, pathConsent, page, url.Values{"action": {"approve"}})
		frontErrorPage(t, resp, body, http.StatusBadRequest)

		want := []string{"invalid_totp", "invalid_totp"}
		if got := frontReasons(frontLogonEvents(f.env, audit.StatusFailure)); !slices.Equal(got, want) {
			t.Errorf("failures audited as %v, want %v", got, want)
		}
		for _, e := range frontLogonEvents(f.env, audit.StatusSuccess) {
			if amr, _ := e.Unmapped["amr"].([]any); len(amr) != 2 {
				t.Errorf("logon event amr %v", e.Unmapped)
			}
		}
	})
}

// A right password does not reset the failure count of a TOTP user: only
// a complete login does, so the password alone does not buy unlimited
// guesses of the second factor.
func TestLoginTOTPGuessesLeadToLockout(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db, func(c *Config) { c.MaxFailures = 3 })
		f.addPublicClient("spa", "SPA")
		f.addUser("alice")
		f.frontEnroll("alice")
		for i := range 3 {
			b := f.browser()
			_, page := f.startLogin(b)
			resp, page := f.password(b, page, "alice", frontPassword)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d: password %d", i, resp.StatusCode)
			}
			if resp, _ := f.submit(b, pathLoginTOTP, page, url.Values{"code": {"12345x"}}); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("round %d: code %d", i, resp.StatusCode)
			}
		}
		b := f.browser()
		_, page := f.startLogin(b)
		if resp, _ := f.password(b, page, "alice", frontPassword); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("locked account accepted the password: %d", resp.StatusCode)
		}
	})
}
