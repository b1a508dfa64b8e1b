package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// TestIdentityEndToEnd is docs/identity.md as a test, against the bulwark
// binary: `bulwark dev`, a client registered with `bulwark clients create
// --generate-key`, a DPoP-bound client-credentials token from the
// unchanged golang.org/x/oauth2 client with private_key_jwt, a resource
// server protected by sdk/authn, and revocation reaching that verifier
// within 5 s. Every step lands in an audit log that verifies, and no token
// reaches it or the logs.
func TestIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.stdout.String(), "Press Ctrl-C to stop."); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bulwark dev did not start")
		}
	}
	devJSON := filepath.Join(dataDir, "dev.json")
	var info struct {
		ControlPlaneURL     string `json:"control_plane_url"`
		AdminCredentialFile string `json:"admin_credential_file"`
		CACertFile          string `json:"ca_cert_file"`
		Issuer              string `json:"issuer"`
	}
	if err := json.Unmarshal(waitFile(t, devJSON, time.Second), &info); err != nil {
		t.Fatal(err)
	}
	ep := newEndpoint(t, info.ControlPlaneURL, info.CACertFile, info.AdminCredentialFile)
	ep.waitReady(t, 10*time.Second)
	issuer := info.Issuer

	// Register a service: the common case of docs/identity.md.
	keyFile := filepath.Join(t.TempDir(), "payments.key")
	runBulwark(t, "clients", "create", "payments", "--generate-key", keyFile, "--dpop",
		"--scope", "accounts:read", "--audience", "bank-api", "--dev-json", devJSON)
	clientKey := readEd25519Key(t, keyFile)

	// x/oauth2's client-credentials client, unchanged: private_key_jwt in
	// the endpoint parameters, DPoP from the SDK's transport (which also
	// answers the server's nonce challenge).
	dpopKey := newEd25519Key(t)
	signer, err := dpop.NewSigner(dpopKey)
	if err != nil {
		t.Fatal(err)
	}
	tokenClient := &http.Client{Timeout: 30 * time.Second, Transport: &dpop.Transport{Base: ep.client.Transport, Signer: signer}}
	cc := clientcredentials.Config{
		ClientID: "payments", TokenURL: issuer + "/oauth2/token", Scopes: []string{"accounts:read"}, AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {clientAssertion(t, clientKey, "payments", issuer)},
		},
	}
	tok, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Type() != "DPoP" || tok.Expiry.IsZero() {
		t.Fatalf("token type %q, expiry %v", tok.Type(), tok.Expiry)
	}

	// A resource server for audience bank-api, protected by sdk/authn.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	verifier, err := authn.New(ctx, authn.Config{
		Issuer: issuer, Audience: "bank-api", RequireSenderConstraint: true,
		HTTPClient: &http.Client{Transport: ep.client.Transport},
	})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewTLSServer(verifier.Middleware(verifier.RequireScopes("accounts:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pr, _ := authn.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"subject": pr.Subject, "client_id": pr.ClientID, "jkt": pr.Confirmation.JKT})
	}))))
	defer api.Close()
	callAPI := func(s *dpop.Signer) (int, map[string]string) {
		t.Helper()
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &dpop.Transport{Base: api.Client().Transport, Signer: s,
			AccessToken: func(context.Context) (string, error) { return tok.AccessToken, nil }}}
		resp, err := hc.Get(api.URL + "/accounts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	status, body := callAPI(signer)
	if status != http.StatusOK || body["subject"] != "payments" || body["client_id"] != "payments" || body["jkt"] != signer.Thumbprint() {
		t.Fatalf("protected call: %d %v", status, body)
	}
	// The token is bound to the DPoP key: another key's proof is refused.
	otherSigner, err := dpop.NewSigner(newEd25519Key(t))
	if err != nil {
		t.Fatal(err)
	}
	if status, _ = callAPI(otherSigner); status != http.StatusUnauthorized {
		t.Fatalf("a proof of another key: %d", status)
	}

	// Revocation (RFC 7009) reaches the running verifier within 5 s.
	form := url.Values{"token": {tok.AccessToken}, "client_id": {"payments"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {clientAssertion(t, clientKey, "payments", issuer)}}
	resp, err := ep.client.PostForm(issuer+"/oauth2/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	revokeBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, revokeBody)
	}
	revoked := time.Now()
	for {
		if status, _ = callAPI(signer); status == http.StatusUnauthorized {
			break
		}
		if time.Since(revoked) > 5*time.Second {
			t.Fatalf("the verifier still accepts the token 5 s after its revocation (status %d)", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("revocation reached the verifier in %s", time.Since(revoked).Round(time.Millisecond))

	// Everything is in an audit log that verifies; no token, key or
	// assertion is in it or in the logs.
	runBulwark(t, "audit", "verify", "--dev-json", devJSON, "--state", filepath.Join(t.TempDir(), "state.json"))
	tail := runBulwark(t, "audit", "tail", "-n", "1000", "--dev-json", devJSON)
	for _, want := range []string{`"class_name":"Entity Management"`, `"uid":"payments"`, `"class_name":"Authentication"`} {
		if !strings.Contains(tail, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	keyPEM, _ := os.ReadFile(keyFile)
	for name, secret := range map[string]string{"access token": tok.AccessToken, "client assertion": form.Get("client_assertion"),
		"private key": strings.Split(string(keyPEM), "\n")[1]} {
		if strings.Contains(tail, secret) || strings.Contains(p.stderr.String(), secret) {
			t.Errorf("the %s reached the audit log or the logs", name)
		}
	}
	cancel()
	<-verifier.Done()
	if err := p.stop(t, syscall.SIGTERM, 15*time.Second); !exitedCleanly(err) {
		t.Fatalf("dev did not exit cleanly: %v", err)
	}
}

// runBulwark runs the bulwark binary to completion and returns its
// stdout; a non-zero exit fails the test.
func runBulwark(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bulwarkBin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("bulwark %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

func newEd25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readEd25519Key(t *testing.T, path string) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		t.Fatalf("%s: %T, want Ed25519", path, k)
	}
	return ek
}

// clientAssertion is a private_key_jwt client assertion (RFC 7523) for the
// issuer, signed with key, whose kid is the RFC 7638 thumbprint the CLI
// registers.
func clientAssertion(t *testing.T, key ed25519.PrivateKey, clientID, issuer string) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", base64.RawURLEncoding.EncodeToString(tp)))
	if err != nil {
		t.Fatal(err)
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	now := time.Now().Unix()
	payload, _ := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": issuer,
		"jti": hex.EncodeToString(jti), "iat": now, "exp": now + 60})
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
