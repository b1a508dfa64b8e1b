package identity

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// tkRedirect is the redirect URI of the token tests' code clients.
const tkRedirect = "http://127.0.0.1/callback"

// addUser inserts a user directly (the login flow is tested elsewhere).
func (f *tokFixture) addUser(username string) *tokenUser {
	f.t.Helper()
	u := &tokenUser{ID: newID("usr"), Username: username, Email: username + "@example.test", Name: "User " + username}
	now := f.env.clock.Now().UnixMilli()
	if _, err := f.env.db.ExecContext(f.ctx, `INSERT INTO identity_users (user_id, username, password_hash, email, name, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, u.ID, u.Username, "x", u.Email, u.Name, now, now); err != nil {
		f.t.Fatal(err)
	}
	return u
}

// issueTestCode writes a grant and an authorization code for client as
// the authorize flow does, and returns the code.
func issueTestCode(t testing.TB, env *testEnv, client *Client, data codeData) string {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	code, grantID, now := newSecret(), newID("grt"), env.clock.Now()
	ctx := context.Background()
	if _, err := env.db.ExecContext(ctx, "INSERT INTO identity_grants (grant_id, client_id, subject, scope, created_at) VALUES (?, ?, ?, ?, ?)",
		grantID, client.ID, data.UserID, joinScope(data.Scopes), now.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if _, err := env.db.ExecContext(ctx, "INSERT INTO identity_codes (code_hash, grant_id, client_id, data, expires_at) VALUES (?, ?, ?, ?, ?)",
		hashSecret(code), grantID, client.ID, string(raw), now.Add(env.srv.cfg.CodeTTL).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	return code
}

// tkCode is an authorization code and its PKCE verifier.
type tkCode struct {
	code, verifier string
	data           codeData
}

// newCode issues a code for user and client with PKCE S256; mutate
// adjusts what the code stands for.
func (f *tokFixture) newCode(c *tokClient, u *tokenUser, mutate func(*codeData)) tkCode {
	f.t.Helper()
	verifier := newSecret()
	data := codeData{UserID: u.ID, RedirectURI: tkRedirect, Scopes: []string{"openid", "profile", "read"}, Audiences: []string{tkAPI1},
		CodeChallenge: pkceS256(verifier), CodeChallengeMethod: "S256", Nonce: "n-0S6_WzA2Mj",
		AuthTime: f.env.clock.Now().Unix(), AMR: []string{"pwd"}}
	if mutate != nil {
		mutate(&data)
	}
	return tkCode{code: issueTestCode(f.t, f.env, c.reg, data), verifier: verifier, data: data}
}

// redeem is the form redeeming code.
func (k tkCode) redeem() url.Values {
	return url.Values{"grant_type": {GrantAuthorizationCode}, "code": {k.code}, "code_verifier": {k.verifier}, "redirect_uri": {tkRedirect}}
}

// withForm returns form with k set to v ("" deletes k).
func withForm(form url.Values, k, v string) url.Values {
	out := url.Values{}
	for kk, vv := range form {
		out[kk] = slices.Clone(vv)
	}
	if v == "" {
		out.Del(k)
	} else {
		out.Set(k, v)
	}
	return out
}

// codeClient registers a FAPI 2.0 confidential client for the
// authorization-code and refresh-token grants, bound with DPoP.
func (f *tokFixture) codeClient(id string) *tokClient {
	return f.addKeyClient(id, func(c *Client) {
		c.Profile, c.DPoPBoundAccessTokens = ProfileFAPI2, true
		c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
		c.RedirectURIs = []string{tkRedirect}
	})
}

func TestAuthorizationCodeGrant(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.codeClient("app-code")
		u := f.addUser("alice")
		key := f.newSigner()
		k := f.newCode(c, u, func(d *codeData) { d.DPoPJKT = key.Thumbprint() })

		resp := f.mustToken(tokReq{client: c, form: k.redeem(), signer: key})
		if resp.str("token_type") != "DPoP" || resp.str("scope") != "openid profile read" || resp.str("refresh_token") == "" {
			t.Errorf("response %v", resp.body)
		}
		cl := f.claims(resp.str("access_token"))
		if cl.Subject != u.ID || cl.ClientID != c.reg.ID || cl.AuthTime != k.data.AuthTime || cl.Cnf == nil || cl.Cnf.JKT != key.Thumbprint() ||
			!slices.Equal(cl.Audience, []string{tkAPI1}) || cl.Expiry-cl.IssuedAt != int64(f.env.srv.cfg.AccessTokenTTL.Seconds()) {
			t.Errorf("access token claims %+v", cl)
		}

		// The ID token verifies with go-oidc through discovery.
		ctx := oidc.ClientContext(context.Background(), f.env.client())
		provider, err := oidc.NewProvider(ctx, f.env.url)
		if err != nil {
			t.Fatal(err)
		}
		idt, err := provider.Verifier(&oidc.Config{ClientID: c.reg.ID, SupportedSigningAlgs: []string{"EdDSA"}}).Verify(ctx, resp.str("id_token"))
		if err != nil {
			t.Fatalf("ID token: %v", err)
		}
		var idc struct {
			Nonce, Name, Email, AZP string
			Username                string `json:"preferred_username"`
			AMR                     []string
		}
		if err := idt.Claims(&idc); err != nil {
			t.Fatal(err)
		}
		if idt.Subject != u.ID || idc.Nonce != k.data.Nonce || idc.Name != u.Name || idc.Username != u.Username || idc.Email != "" ||
			idc.AZP != c.reg.ID || !slices.Equal(idc.AMR, []string{"pwd"}) {
			t.Errorf("ID token claims %+v sub %s", idc, idt.Subject)
		}
		if got := f.env.countEvents(classAuthentication, actAuthTicket, audit.StatusSuccess); got != 1 {
			t.Errorf("%d token issues audited", got)
		}
		f.noSecretsInAudit(resp.str("access_token"), resp.str("refresh_token"), resp.str("id_token"), k.code, k.verifier)

		// A public client with PKCE and no DPoP gets a Bearer token.
		pub := f.addPublicClient("app-public", nil)
		pk := f.newCode(pub, u, func(d *codeData) { d.Scopes = []string{"read"} })
		resp = f.mustToken(tokReq{client: pub, form: pk.redeem()})
		if resp.str("token_type") != "Bearer" || resp.str("id_token") != "" || resp.str("refresh_token") == "" {
			t.Errorf("public client response %v", resp.body)
		}
	})
}

// TestAuthorizationCodeRefusals mirrors the code-redemption modules of the
// FAPI 2.0 conformance suite.
func TestAuthorizationCodeRefusals(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.codeClient("app-code")
		other := f.codeClient("app-other")
		u := f.addUser("bob")
		key, otherKey := f.newSigner(), f.newSigner()
		bound := func(d *codeData) { d.DPoPJKT = key.Thumbprint() }

		t.Run("code reuse revokes the tokens issued from it", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			k := f.newCode(c, u, bound)
			first := f.mustToken(tokReq{client: c, form: k.redeem(), signer: key})
			jti := f.claims(first.str("access_token")).JTI
			if f.revoked(jti) {
				t.Fatal("revoked before the reuse")
			}
			f.wantError(f.post(tokReq{client: c, form: k.redeem(), signer: key}), "invalid_grant")
			if !f.revoked(jti) {
				t.Error("the first access token is not in the revocation feed")
			}
			f.wantError(f.post(tokReq{client: c, form: url.Values{"grant_type": {GrantRefreshToken},
				"refresh_token": {first.str("refresh_token")}}, signer: key}), "invalid_grant")
			var replays int
			for _, e := range f.env.auditEvents() {
				if e.ClassUID == classAuthentication && e.StatusID == audit.StatusFailure && e.Unmapped["replay"] == "authorization code reuse" &&
					e.Unmapped["grant_revoked"] == true {
					replays++
				}
			}
			if replays != 1 {
				t.Errorf("%d code-reuse refusals audited", replays)
			}
		})

		t.Run("expired code", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			k := f.newCode(c, u, bound)
			f.env.clock.Advance(f.env.srv.cfg.CodeTTL + time.Second)
			f.wantError(f.post(tokReq{client: c, form: k.redeem(), signer: key}), "invalid_grant")
		})

		// Each refusal leaves the code unspent: the right request after it
		// still works (so a wrong guess cannot burn a victim's code).
		for _, tc := range []struct {
			name   string
			client *tokClient
			form   func(tkCode) url.Values
			signer *tkDPoP
			mutate func(*codeData)
			code   string
		}{
			{"wrong verifier", c, func(k tkCode) url.Values { return withForm(k.redeem(), "code_verifier", newSecret()) }, key, bound, "invalid_grant"},
			{"missing verifier", c, func(k tkCode) url.Values { return withForm(k.redeem(), "code_verifier", "") }, key, bound, "invalid_request"},
			{"verifier too short", c, func(k tkCode) url.Values { return withForm(k.redeem(), "code_verifier", "abc") }, key, bound, "invalid_grant"},
			{"challenge sent as verifier (plain)", c, func(k tkCode) url.Values {
				return withForm(k.redeem(), "code_verifier", k.data.CodeChallenge)
			}, key, bound, "invalid_grant"},
			{"redirect_uri mismatch", c, func(k tkCode) url.Values {
				return withForm(k.redeem(), "redirect_uri", "http://127.0.0.1/other")
			}, key, bound, "invalid_grant"},
			{"redirect_uri missing", c, func(k tkCode) url.Values { return withForm(k.redeem(), "redirect_uri", "") }, key, bound, "invalid_grant"},
			{"code of another client", other, func(k tkCode) url.Values { return k.redeem() }, key, bound, "invalid_grant"},
			{"unknown code", c, func(k tkCode) url.Values { return withForm(k.redeem(), "code", newSecret()) }, key, bound, "invalid_grant"},
			{"no code", c, func(k tkCode) url.Values { return withForm(k.redeem(), "code", "") }, key, bound, "invalid_request"},
			{"proof of another key than dpop_jkt", c, func(k tkCode) url.Values { return k.redeem() }, otherKey, bound, "invalid_dpop_proof"},
			{"no DPoP proof", c, func(k tkCode) url.Values { return k.redeem() }, nil, bound, "invalid_dpop_proof"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				k := f.newCode(c, u, tc.mutate)
				f.wantError(f.post(tokReq{client: tc.client, form: tc.form(k), signer: tc.signer}), tc.code)
				f.mustToken(tokReq{client: c, form: k.redeem(), signer: key})
			})
		}

		t.Run("code issued with plain PKCE", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			k := f.newCode(c, u, func(d *codeData) { bound(d); d.CodeChallengeMethod = "plain" })
			f.wantError(f.post(tokReq{client: c, form: withForm(k.redeem(), "code_verifier", k.data.CodeChallenge), signer: key}), "invalid_grant")
		})

		t.Run("disabled user", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			gone := f.addUser("carol")
			k := f.newCode(c, gone, bound)
			if _, err := f.env.db.ExecContext(f.ctx, "UPDATE identity_users SET disabled_at = 1 WHERE user_id = ?", gone.ID); err != nil {
				t.Fatal(err)
			}
			f.wantError(f.post(tokReq{client: c, form: k.redeem(), signer: key}), "invalid_grant")
		})

		t.Run("revoked grant", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			k := f.newCode(c, u, bound)
			if _, err := f.env.db.ExecContext(f.ctx, "UPDATE identity_grants SET revoked_at = 1 WHERE grant_id = (SELECT grant_id FROM identity_codes WHERE code_hash = ?)",
				hashSecret(k.code)); err != nil {
				t.Fatal(err)
			}
			f.wantError(f.post(tokReq{client: c, form: k.redeem(), signer: key}), "invalid_grant")
		})
	})
}

// TestCodeRedemptionRace redeems one code from several requests at once:
// at most one gets tokens, and those are revoked, since the code was used
// twice.
func TestCodeRedemptionRace(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.addPublicClient("app-race", nil)
		u := f.addUser("heidi")
		for round := range 3 {
			k := f.newCode(c, u, nil)
			const n = 6
			results := make(chan tokResp, n)
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- f.send(tokReq{client: c, form: k.redeem()})
				}()
			}
			wg.Wait()
			close(results)
			var issued []string
			for r := range results {
				switch {
				case r.status == 200:
					issued = append(issued, r.str("access_token"))
				case r.errCode() != "invalid_grant":
					t.Errorf("round %d: %d %v", round, r.status, r.body)
				}
			}
			if len(issued) > 1 {
				t.Fatalf("round %d: one code redeemed %d times", round, len(issued))
			}
			for _, tok := range issued {
				if !f.revoked(f.claims(tok).JTI) {
					t.Errorf("round %d: the token of a code used %d times is not revoked", round, n)
				}
			}
		}
	})
}
