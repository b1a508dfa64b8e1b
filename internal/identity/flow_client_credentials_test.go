package identity

import (
	"net/url"
	"slices"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestClientCredentialsGrant(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.addKeyClient("svc-cc", nil)
		cc := func(kv ...string) url.Values {
			form := url.Values{"grant_type": {GrantClientCredentials}}
			for i := 0; i+1 < len(kv); i += 2 {
				form.Add(kv[i], kv[i+1])
			}
			return form
		}
		for _, tc := range []struct {
			name  string
			form  url.Values
			scope string
			aud   []string
		}{
			{"defaults: every scope but openid, the first audience", cc(), "profile email read write", []string{tkAPI1}},
			{"requested scopes", cc("scope", "write read"), "write read", []string{tkAPI1}},
			{"resource", cc("resource", tkAPI2), "profile email read write", []string{tkAPI2}},
			{"audience", cc("audience", tkAPI3, "scope", "read"), "read", []string{tkAPI3}},
			{"two resources", cc("resource", tkAPI2, "resource", tkAPI3), "profile email read write", []string{tkAPI2, tkAPI3}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				resp := f.mustToken(tokReq{client: c, form: tc.form})
				cl := f.claims(resp.str("access_token"))
				if cl.Scope != tc.scope || resp.str("scope") != tc.scope || !slices.Equal(cl.Audience, tc.aud) || cl.Subject != c.reg.ID ||
					cl.AuthTime != 0 || cl.Act != nil || cl.Cnf != nil {
					t.Errorf("claims %+v, response %v", cl, resp.body)
				}
				if resp.str("refresh_token") != "" || resp.str("id_token") != "" || resp.str("token_type") != "Bearer" ||
					resp.body["expires_in"] != float64(f.env.srv.cfg.AccessTokenTTL.Seconds()) {
					t.Errorf("response %v", resp.body)
				}
				f.noSecretsInAudit(resp.str("access_token"))
			})
		}
		for _, tc := range []struct {
			name string
			form url.Values
			code string
		}{
			{"scope not allowed", cc("scope", "read admin"), "invalid_scope"},
			{"openid", cc("scope", "openid"), "invalid_scope"},
			{"resource not allowed", cc("resource", "https://evil.test"), "invalid_target"},
			{"audience not allowed", cc("audience", "https://evil.test", "resource", tkAPI1), "invalid_target"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				before := f.env.countEvents(classAuthentication, actAuthTicket, audit.StatusFailure)
				f.wantError(f.post(tokReq{client: c, form: tc.form}), tc.code)
				if got := f.env.countEvents(classAuthentication, actAuthTicket, audit.StatusFailure); got != before+1 {
					t.Errorf("refusal not audited")
				}
			})
		}
		// Client-credentials tokens are audited but not recorded under a
		// grant.
		var n int
		if err := f.env.db.QueryRowContext(f.ctx, "SELECT COUNT(*) FROM identity_access_tokens").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d client-credentials tokens recorded", n)
		}
		if got := f.env.countEvents(classAuthentication, actAuthTicket, audit.StatusSuccess); got != 5 {
			t.Errorf("%d token issues audited, want 5", got)
		}
		for _, e := range f.env.auditEvents() {
			if e.ActivityID == actAuthTicket && e.StatusID == audit.StatusSuccess &&
				(e.Actor == nil || e.Actor.AppUID != c.reg.ID || e.Actor.SessionUID == "" || e.Unmapped["grant_type"] != GrantClientCredentials) {
				t.Errorf("token event %+v", e)
			}
		}
		// A FAPI client without a sender constraint gets nothing.
		fapi := f.addKeyClient("svc-cc-fapi", func(c *Client) { c.Profile, c.TLSClientCertificateBoundAccessTokens = ProfileFAPI2, true })
		f.wantError(f.post(tokReq{client: fapi, form: cc()}), "invalid_request")
	})
}
