package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// revocationWindow is how soon after a revocation the gateway must refuse
// the token.
const revocationWindow = 5 * time.Second

// controlPlaneEdge builds the parts of a gateway that trusts srv's tokens
// and exchanges them at its token endpoint, in front of a payments agent
// that verifies the internal tokens with srv's keys.
func controlPlaneEdge(t *testing.T, srv *controlplane.Server, hc *http.Client, gwKey ed25519.PrivateKey) (edgeParts, *echo) {
	t.Helper()
	verifier := func(aud string) *authn.Verifier {
		ctx, cancel := context.WithCancel(context.Background())
		v, err := authn.New(ctx, authn.Config{Issuer: srv.Issuer(), Audience: aud, HTTPClient: hc, Logger: slog.New(slog.DiscardHandler)})
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
	routes, dir := writeRoutes(t, testRoutesYAML)
	ca := mtlstest.NewCA(t, testTD)
	svc := &echo{}
	payments := startInbound(t, ca, testPaymentsID, svc, verifier(testPaymentsID))
	decider, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"gateway.cedar": testPolicies}})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExchanger(ExchangerConfig{TokenURL: srv.Issuer() + identity.PathToken, ClientID: testExchangeCID, Key: gwKey,
		KeyID: testExchangeCID + "-key", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, roots := writeServingCert(t, dir)
	return edgeParts{
		routes: routes, certFile: certFile, keyFile: keyFile, roots: roots,
		verifier:  verifier(testAudience),
		decider:   decider,
		resolver:  staticResolver{"payments": {spiffeid.RequireFromString(testPaymentsID), []string{payments}}},
		source:    staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()},
		exchanger: ex,
	}, svc
}

// revokeToken revokes token at srv's revocation endpoint (RFC 7009) as
// client id, authenticated with a private_key_jwt assertion.
func revokeToken(t *testing.T, srv *controlplane.Server, hc *http.Client, id string, key ed25519.PrivateKey, token string) {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: id + "-key"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(s).Claims(jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{srv.Issuer()}, ID: rand.Text(),
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.PostForm(srv.Issuer()+identity.PathRevoke, url.Values{"token": {token}, "token_type_hint": {"access_token"},
		"client_id": {id}, "client_assertion_type": {assertionTypeJWT}, "client_assertion": {assertion}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
}

// A token revoked at the control plane is refused at the edge within
// revocationWindow, with a 401 and an Authentication failure event whose
// reason is "revoked"; the refused requests never reach the service.
func TestGatewayRefusesRevokedToken(t *testing.T) {
	t.Parallel()
	srv, hc := startControlPlane(t)
	_, appKey, _ := ed25519.GenerateKey(rand.Reader)
	_, gwKey, _ := ed25519.GenerateKey(rand.Reader)
	registerKeyClient(t, srv, "bank-app", appKey, []string{identity.GrantClientCredentials}, []string{"payments:write", "accounts:read"}, []string{testAudience})
	registerKeyClient(t, srv, testExchangeCID, gwKey, []string{identity.GrantTokenExchange}, []string{"payments:write", "accounts:read"}, []string{testPaymentsID})
	parts, svc := controlPlaneEdge(t, srv, hc, gwKey)
	gw := parts.start(t, Limiters{})

	tok := clientCredentialsToken(t, srv, hc, "bank-app", appKey, "accounts:read")
	other := clientCredentialsToken(t, srv, hc, "bank-app", appKey, "accounts:read")
	for _, tc := range []struct {
		name  string
		token string
	}{{"before revocation", tok}, {"another token of the client", other}} {
		if status, _ := gw.get(t, "/v1/payments", tc.token, "rev-"+strings.ReplaceAll(tc.name, " ", "-")); status != http.StatusOK {
			t.Fatalf("%s: status %d", tc.name, status)
		}
	}

	revokeToken(t, srv, hc, "bank-app", appKey, tok)
	revokedAt := time.Now()
	var rid string
	for i := 0; ; i++ {
		rid = fmt.Sprintf("rev-after-%d", i)
		hits := svc.hits.Load()
		req, _ := http.NewRequest(http.MethodGet, gw.url+"/v1/payments", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Request-ID", rid)
		resp, err := gw.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			if !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") || !strings.Contains(string(body), CodeInvalidToken) {
				t.Errorf("refusal: WWW-Authenticate %q, body %s", resp.Header.Get("WWW-Authenticate"), body)
			}
			if svc.hits.Load() != hits {
				t.Error("the refused request reached the service")
			}
			break
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d %s", rid, resp.StatusCode, body)
		}
		if time.Since(revokedAt) > revocationWindow {
			t.Fatalf("the revoked token was still accepted %v after revocation", revocationWindow)
		}
		time.Sleep(50 * time.Millisecond) // polling the edge, not synchronising
	}
	t.Logf("refused %v after revocation", time.Since(revokedAt).Round(time.Millisecond))

	evs := gw.events.find(rid)
	if len(evs) != 1 {
		t.Fatalf("events of %s: %+v, want one", rid, evs)
	}
	ev := evs[0]
	if ev.ClassUID != classAuthentication || ev.ActivityID != activityLogon || ev.StatusID != audit.StatusFailure ||
		ev.StatusDetail != authn.ReasonRevoked || ev.Metadata.CorrelationUID != rid || ev.Metadata.TraceUID == "" {
		t.Fatalf("event %+v, want an Authentication failure %q", ev, authn.ReasonRevoked)
	}
	if b, _ := json.Marshal(ev); strings.Contains(string(b), tok) || strings.Contains(string(b), "eyJ") {
		t.Fatalf("the event holds a token: %s", b)
	}
	// Only that token is refused: another one of the same client passes.
	if status, _ := gw.get(t, "/v1/payments", other, "rev-other-after"); status != http.StatusOK {
		t.Fatalf("another token after the revocation: status %d", status)
	}
}
