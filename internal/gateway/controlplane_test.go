package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// startControlPlane runs a real control plane on 127.0.0.1:0 until the test
// ends and returns it with a client that trusts its CA.
func startControlPlane(t *testing.T) (*controlplane.Server, *http.Client) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.ResolvePaths()
	srv, err := controlplane.New(context.Background(), &cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	pem, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(srv.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, client
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// registerKeyClient registers a private_key_jwt client with key.
func registerKeyClient(t *testing.T, srv *controlplane.Server, id string, key ed25519.PrivateKey, grants, scopes, auds []string) {
	t.Helper()
	c := &identity.Client{ID: id, Profile: identity.ProfileOAuth2, TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: id + "-key", Algorithm: "EdDSA", Use: "sig"}}},
		GrantTypes: grants, Scopes: scopes, Audiences: auds}
	if err := srv.Identity().CreateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// clientCredentialsToken gets an access token for client id from the
// control plane's token endpoint with a private_key_jwt assertion.
func clientCredentialsToken(t *testing.T, srv *controlplane.Server, hc *http.Client, id string, key ed25519.PrivateKey, scope string) string {
	t.Helper()
	tokenURL := srv.Issuer() + identity.PathToken
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key, KeyID: id + "-key"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(s).Claims(jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{tokenURL}, ID: "jti-" + now.Format(time.RFC3339Nano),
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.PostForm(tokenURL, url.Values{"grant_type": {identity.GrantClientCredentials}, "scope": {scope}, "client_id": {id},
		"client_assertion_type": {assertionTypeJWT}, "client_assertion": {assertion}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tr) != nil || tr.AccessToken == "" {
		t.Fatalf("token: %d %s", resp.StatusCode, b)
	}
	return tr.AccessToken
}

// TestGatewayWithControlPlane runs the gateway against a real control plane:
// its tokens are verified with the control plane's keys and exchanged at its
// token endpoint for an internal token that the payments agent verifies.
func TestGatewayWithControlPlane(t *testing.T) {
	t.Parallel()
	srv, hc := startControlPlane(t)
	_, appKey, _ := ed25519.GenerateKey(rand.Reader)
	_, gwKey, _ := ed25519.GenerateKey(rand.Reader)
	registerKeyClient(t, srv, "bank-app", appKey, []string{identity.GrantClientCredentials}, []string{"payments:write", "accounts:read"}, []string{testAudience})
	registerKeyClient(t, srv, testExchangeCID, gwKey, []string{identity.GrantTokenExchange}, []string{"payments:write", "accounts:read"}, []string{testPaymentsID})

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
	ca := mtlstest.NewCA(t, testTD)
	svc := &echo{}
	payments := startInbound(t, ca, testPaymentsID, svc, verifier(testPaymentsID))

	dir := t.TempDir()
	for name, content := range map[string]string{"routes.yaml": testRoutesYAML, "openapi.yaml": testOpenAPI} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	routes, err := LoadRoutes(filepath.Join(dir, "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decider, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"gateway.cedar": testPolicies}})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExchanger(ExchangerConfig{TokenURL: srv.Issuer() + identity.PathToken, ClientID: testExchangeCID, Key: gwKey, KeyID: testExchangeCID + "-key", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	events := &recorder{}
	certFile, keyFile, roots := writeServingCert(t, dir)
	g, err := New(Config{Routes: routes, CertFile: certFile, KeyFile: keyFile}, Deps{
		Verifier:   verifier(testAudience),
		Decider:    decider,
		Resolver:   staticResolver{"payments": {spiffeid.RequireFromString(testPaymentsID), []string{payments}}},
		Source:     staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()},
		Exchanger:  ex,
		Events:     events,
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	gwURL, client := serveGateway(t, g, roots)

	tok := clientCredentialsToken(t, srv, hc, "bank-app", appKey, "payments:write accounts:read")
	req, _ := http.NewRequest(http.MethodPost, gwURL+"/v1/payments", strings.NewReader(`{"amount":5,"to":"GB33"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", "cp-1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	seen, _, _ := svc.seen()
	if seen.Get("Authorization") != "" || strings.Contains(strings.Join(seen.Values("X-Bulwark-Client"), ""), "eyJ") {
		t.Fatal("a token reached the service")
	}
	// The payments agent accepted the internal token (audience = its
	// SPIFFE ID) and named the client it was issued to.
	if seen.Get("X-Bulwark-Client") == "" || seen.Get("X-Request-ID") != "cp-1" {
		t.Fatalf("identity headers %v", seen)
	}
	if evs := events.find("cp-1"); len(evs) != 1 || evs[0].StatusDetail != DetailAllowed {
		t.Fatalf("events %+v", evs)
	}

	// A tampered token is refused.
	req, _ = http.NewRequest(http.MethodGet, gwURL+"/v1/payments", nil)
	req.Header.Set("Authorization", "Bearer "+tok+"x")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("tampered token: %d", resp.StatusCode)
	}
}
