package identity

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// exchangeForm is the form of a token exchange of subject, with extra
// parameters as key-value pairs.
func exchangeForm(subject string, extra ...string) url.Values {
	form := url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subject}, "subject_token_type": {TokenTypeAccessToken}}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Add(extra[i], extra[i+1])
	}
	return form
}

func TestTokenExchange(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		exchanger := func(auds ...string) func(*Client) {
			return func(c *Client) {
				c.GrantTypes = []string{GrantClientCredentials, GrantTokenExchange}
				c.Scopes, c.Audiences = []string{"read", "write"}, auds
			}
		}
		backend := f.addKeyClient("svc-backend", exchanger(tkAPI1, "svc-backend-2"))
		backend2 := f.addKeyClient("svc-backend-2", exchanger(tkAPI3))
		stranger := f.addKeyClient("svc-stranger", exchanger(tkAPI1))
		front := f.codeClient("app-front")
		u := f.addUser("grace")
		key := f.newSigner()
		k := f.newCode(front, u, func(d *codeData) {
			d.DPoPJKT, d.Scopes, d.Audiences = key.Thumbprint(), []string{"openid", "read", "write"}, []string{"svc-backend"}
		})
		user := f.mustToken(tokReq{client: front, form: k.redeem(), signer: key})
		t0 := user.str("access_token")
		t0c := f.claims(t0)

		// Delegation: same subject, narrower scope, the acting client in
		// act and the client the user authorized as the prior actor.
		resp := f.mustToken(tokReq{client: backend, form: exchangeForm(t0, "audience", tkAPI1, "scope", "read")})
		t1c := f.claims(resp.str("access_token"))
		if t1c.Subject != u.ID || t1c.ClientID != backend.reg.ID || t1c.Scope != "read" || !slices.Equal(t1c.Audience, []string{tkAPI1}) ||
			t1c.Act == nil || t1c.Act.Subject != backend.reg.ID || t1c.Act.Act == nil || t1c.Act.Act.Subject != front.reg.ID ||
			t1c.Act.Act.Act != nil || t1c.Expiry > t0c.Expiry || t1c.AuthTime != t0c.AuthTime ||
			t1c.Cnf != nil || t1c.SubjectType != subjectTypeUser {
			t.Errorf("exchanged token %+v act %+v", t1c, t1c.Act)
		}
		if resp.str("issued_token_type") != TokenTypeAccessToken || resp.str("refresh_token") != "" || resp.str("token_type") != "Bearer" {
			t.Errorf("response %v", resp.body)
		}
		// Default scope: what the subject had that the client may have.
		resp = f.mustToken(tokReq{client: backend, form: exchangeForm(t0)})
		if cl := f.claims(resp.str("access_token")); cl.Scope != "read write" || !slices.Equal(cl.Audience, []string{tkAPI1}) {
			t.Errorf("default exchange %+v", cl)
		}

		// A chain: app-front → backend → backend-2 → api-3, recorded in
		// nested act.
		t2 := f.mustToken(tokReq{client: backend, form: exchangeForm(t0, "audience", "svc-backend-2", "scope", "read")}).str("access_token")
		t3c := f.claims(f.mustToken(tokReq{client: backend2, form: exchangeForm(t2, "resource", tkAPI3)}).str("access_token"))
		if t3c.Subject != u.ID || t3c.Act == nil || t3c.Act.Subject != backend2.reg.ID || t3c.Act.Act == nil ||
			t3c.Act.Act.Subject != backend.reg.ID || t3c.Act.Act.Act == nil || t3c.Act.Act.Act.Subject != front.reg.ID ||
			t3c.Act.Act.Act.Act != nil || t3c.SubjectType != subjectTypeUser {
			t.Errorf("chained token act %+v", t3c.Act)
		}

		// An actor token of the acting client itself is accepted.
		own := f.mustToken(tokReq{client: backend, form: url.Values{"grant_type": {GrantClientCredentials}}}).str("access_token")
		foreign := f.mustToken(tokReq{client: stranger, form: url.Values{"grant_type": {GrantClientCredentials}}}).str("access_token")
		f.mustToken(tokReq{client: backend, form: exchangeForm(t0, "actor_token", own, "actor_token_type", TokenTypeAccessToken)})

		// Another client's own token (client credentials, for the backend)
		// exchanged: its subject stays a client, though the acting client's
		// id is no longer the subject — without subject_type a service
		// would take the client for a user.
		ccTok, err := f.env.srv.keys.sign(TypAccessToken, atClaims{Issuer: f.env.url, Subject: front.reg.ID, ClientID: front.reg.ID,
			Audience: audienceList{backend.reg.ID}, Expiry: f.env.clock.Now().Add(time.Minute).Unix(), IssuedAt: f.env.clock.Now().Unix(),
			JTI: newID("at"), Scope: "read"})
		if err != nil {
			t.Fatal(err)
		}
		byClient := f.claims(f.mustToken(tokReq{client: backend, form: exchangeForm(ccTok)}).str("access_token"))
		if byClient.Subject != front.reg.ID || byClient.SubjectType != subjectTypeClient || byClient.subjectIsUser() ||
			byClient.Act == nil || byClient.Act.Act != nil {
			t.Errorf("exchanged client token %+v", byClient)
		}

		// A token the client may have via may_act.
		mayAct, err := f.env.srv.keys.sign(TypAccessToken, atClaims{Issuer: f.env.url, Subject: u.ID, Audience: audienceList{tkAPI2},
			Expiry: f.env.clock.Now().Add(time.Minute).Unix(), IssuedAt: f.env.clock.Now().Unix(), JTI: newID("at"), ClientID: front.reg.ID,
			Scope: "read", MayAct: &actClaim{Subject: stranger.reg.ID}})
		if err != nil {
			t.Fatal(err)
		}
		f.mustToken(tokReq{client: stranger, form: exchangeForm(mayAct)})

		idToken := user.str("id_token")
		for _, tc := range []struct {
			name   string
			client *tokClient
			form   url.Values
			code   string
		}{
			{"actor not allowed (not in aud or may_act)", stranger, exchangeForm(t0), "invalid_request"},
			{"may_act names another client", backend, exchangeForm(mayAct), "invalid_request"},
			{"audience widened", backend, exchangeForm(t0, "audience", tkAPI3), "invalid_target"},
			{"resource widened", backend, exchangeForm(t0, "resource", "https://evil.test"), "invalid_target"},
			{"scope widened beyond the subject", backend2, exchangeForm(t2, "scope", "write"), "invalid_scope"},
			{"scope widened beyond the client", backend, exchangeForm(t0, "scope", "openid"), "invalid_scope"},
			{"actor token of another client", backend, exchangeForm(t0, "actor_token", foreign, "actor_token_type", TokenTypeAccessToken), "invalid_request"},
			{"actor token without type", backend, exchangeForm(t0, "actor_token", own), "invalid_request"},
			{"subject token type", backend, withForm(exchangeForm(t0), "subject_token_type", TokenTypeIDToken), "invalid_request"},
			{"ID token as subject", backend, exchangeForm(idToken), "invalid_request"},
			{"garbage subject", backend, exchangeForm("a.b.c"), "invalid_request"},
			{"no subject", backend, withForm(exchangeForm(t0), "subject_token", ""), "invalid_request"},
			{"refresh token requested", backend, exchangeForm(t0, "requested_token_type", TokenTypeRefreshToken), "invalid_request"},
			{"client without the grant", front, exchangeForm(t0), "unauthorized_client"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				var signer *tkDPoP
				if tc.client == front {
					signer = key
				}
				f.wantError(f.post(tokReq{client: tc.client, form: tc.form, signer: signer}), tc.code)
			})
		}
		if got := f.env.countEvents(classAuthentication, actServiceTicket, audit.StatusSuccess); got != 7 {
			t.Errorf("%d exchanges audited, want 7", got)
		}

		// The lifetime never exceeds the subject token's.
		f.env.clock.Advance(4 * time.Minute)
		late := f.claims(f.mustToken(tokReq{client: backend, form: exchangeForm(t0)}).str("access_token"))
		if late.Expiry != t0c.Expiry {
			t.Errorf("exchanged token expires at %d, the subject at %d", late.Expiry, t0c.Expiry)
		}

		// Revoking the user's grant revokes the delegated tokens, and the
		// subject token can no longer be exchanged.
		var grantID string
		if err := f.env.db.QueryRowContext(f.ctx, "SELECT grant_id FROM identity_access_tokens WHERE jti = ?", t0c.JTI).Scan(&grantID); err != nil {
			t.Fatal(err)
		}
		if err := f.env.srv.revokeGrant(f.ctx, grantID, "test"); err != nil {
			t.Fatal(err)
		}
		if !f.revoked(t1c.JTI) || !f.revoked(late.JTI) {
			t.Error("delegated tokens survive the revocation of the user's grant")
		}
		f.wantError(f.post(tokReq{client: backend, form: exchangeForm(t0)}), "invalid_request")
	})
}
