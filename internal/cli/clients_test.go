package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/identity"
)

// cpEnv is a real control plane on 127.0.0.1:0 with the dev.json that
// `bulwark dev` would leave.
type cpEnv struct {
	srv     *controlplane.Server
	devJSON string
	cred    string
}

func newCPEnv(t *testing.T) *cpEnv {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.ResolvePaths()
	srv, err := controlplane.New(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	info := devinfo.Info{ControlPlaneURL: srv.URL(), AdminCredentialFile: srv.AdminCredentialPath(), CACertFile: srv.CAFile(),
		DataDir: cfg.DataDir, Issuer: srv.Issuer()}
	if err := devinfo.Write(cfg.DataDir, info); err != nil {
		t.Fatal(err)
	}
	return &cpEnv{srv: srv, devJSON: filepath.Join(cfg.DataDir, devinfo.FileName), cred: srv.NewAdminCredential}
}

// run runs the bulwark CLI against the control plane.
func (e *cpEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(append(args, "--dev-json", e.devJSON), strings.NewReader(""), &out, &errOut)
	if strings.Contains(out.String()+errOut.String(), e.cred) {
		t.Fatalf("bulwark %v printed the admin credential", args)
	}
	return code, out.String(), errOut.String()
}

// getClient reads a registration with the CLI, as JSON.
func (e *cpEnv) getClient(t *testing.T, id string) *identity.Client {
	t.Helper()
	code, out, errOut := e.run(t, "clients", "get", id, "-o", "json")
	if code != 0 {
		t.Fatalf("clients get %s: exit %d: %s", id, code, errOut)
	}
	var c identity.Client
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("clients get -o json: %v\n%s", err, out)
	}
	return &c
}

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	return writeTemp(t, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func TestClientsCommands(t *testing.T) {
	t.Parallel()
	env := newCPEnv(t)
	dir := t.TempDir()

	// The common case: a generated Ed25519 key, private_key_jwt, DPoP.
	keyFile := filepath.Join(dir, "payments.key")
	code, out, errOut := env.run(t, "clients", "create", "payments", "--generate-key", keyFile, "--dpop",
		"--scope", "accounts:read", "--audience", "bank-api", "--name", "Payments")
	if code != 0 || !strings.Contains(out, "wrote "+keyFile) || !strings.Contains(out, "private_key_jwt") {
		t.Fatalf("create: exit %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key file: %v %v", fi, err)
	}
	keyPEM, _ := os.ReadFile(keyFile)
	block, _ := pem.Decode(keyPEM)
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c := env.getClient(t, "payments")
	if c.Profile != identity.ProfileFAPI2 || !c.DPoPBoundAccessTokens || c.GrantTypes[0] != identity.GrantClientCredentials ||
		len(c.JWKS.Keys) != 1 || !c.JWKS.Keys[0].Key.(ed25519.PublicKey).Equal(priv.(ed25519.PrivateKey).Public()) {
		t.Fatalf("registered: %+v", c)
	}

	// update changes only the fields whose flags are given.
	if code, out, errOut = env.run(t, "clients", "update", "payments", "--scope", "accounts:read", "--scope", "payments:write"); code != 0 {
		t.Fatalf("update: exit %d\n%s%s", code, out, errOut)
	}
	c = env.getClient(t, "payments")
	if strings.Join(c.Scopes, " ") != "accounts:read payments:write" || c.Name != "Payments" || c.Audiences[0] != "bank-api" || len(c.JWKS.Keys) != 1 {
		t.Fatalf("after update: %+v", c)
	}

	// mTLS with a self-signed certificate, generated.
	mtlsKey := filepath.Join(dir, "teller.key")
	code, out, errOut = env.run(t, "clients", "create", "teller", "--auth-method", "self_signed_tls_client_auth",
		"--generate-key", mtlsKey, "--mtls-bound", "--audience", "bank-api", "-o", "json")
	if code != 0 || !strings.Contains(errOut, "wrote "+filepath.Join(dir, "teller.crt")) {
		t.Fatalf("create mTLS: exit %d\n%s%s", code, out, errOut)
	}
	var teller identity.Client
	if err := json.Unmarshal([]byte(out), &teller); err != nil || len(teller.JWKS.Keys[0].Certificates) != 1 {
		t.Fatalf("-o json prints one registration: %v\n%s", err, out)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "teller.crt"), mtlsKey); err != nil {
		t.Fatalf("the generated key and certificate are no TLS key pair: %v", err)
	}

	// Existing keys: a PEM public key, a certificate, a JWKS.
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(ecKey.Public())
	_, certPEM, err := selfSignedClientCert(ecKey, "branch", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	jwk, _ := identity.NewClientKey(edPub, nil)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	code, out, errOut = env.run(t, "clients", "create", "branch", "--public-key", writePEM(t, "PUBLIC KEY", pubDER),
		"--jwks-file", writeTemp(t, string(jwks)), "--mtls-bound", "--audience", "bank-api")
	if code != 0 {
		t.Fatalf("create with keys: exit %d\n%s%s", code, out, errOut)
	}
	if c = env.getClient(t, "branch"); len(c.JWKS.Keys) != 2 || c.JWKS.Keys[0].KeyID != jwk.KeyID || c.JWKS.Keys[1].Algorithm != "ES256" {
		t.Fatalf("branch keys: %+v", c.JWKS)
	}
	code, out, errOut = env.run(t, "clients", "update", "branch", "--auth-method", "self_signed_tls_client_auth", "--cert", writeTemp(t, string(certPEM)))
	if code != 0 {
		t.Fatalf("update to a certificate: exit %d\n%s%s", code, out, errOut)
	}
	if c = env.getClient(t, "branch"); len(c.JWKS.Keys) != 1 || len(c.JWKS.Keys[0].Certificates) != 1 {
		t.Fatalf("a key flag replaces the key set: %+v", c.JWKS)
	}

	// A public client: oauth2 profile, PKCE only.
	code, out, errOut = env.run(t, "clients", "create", "mobile", "--profile", "oauth2", "--auth-method", "none",
		"--redirect-uri", "http://127.0.0.1:8080/callback", "--grant-type", "authorization_code", "--grant-type", "refresh_token",
		"--scope", "openid", "--audience", "bank-api")
	if code != 0 {
		t.Fatalf("create public client: exit %d\n%s%s", code, out, errOut)
	}

	code, out, _ = env.run(t, "clients", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[0], "CLIENT ID") || !strings.HasPrefix(lines[2], "mobile ") ||
		!strings.Contains(lines[2], "authorization_code,refresh_token") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}

	if code, out, _ = env.run(t, "clients", "disable", "mobile"); code != 0 || !strings.Contains(out, "disabled") {
		t.Fatalf("disable: exit %d\n%s", code, out)
	}
	if c, err := env.srv.Identity().GetClient(context.Background(), "mobile"); err != nil || !c.Disabled {
		t.Fatalf("disabled: %v %+v", err, c)
	}
	if code, out, _ = env.run(t, "clients", "enable", "mobile"); code != 0 || !strings.Contains(out, "enabled") {
		t.Fatalf("enable: exit %d\n%s", code, out)
	}
	if code, out, _ = env.run(t, "clients", "delete", "mobile"); code != 0 || out != "deleted client mobile\n" {
		t.Fatalf("delete: exit %d\n%s", code, out)
	}
	if code, _, errOut = env.run(t, "clients", "get", "mobile"); code != 1 || !strings.Contains(errOut, "404 not_found") {
		t.Fatalf("get deleted: exit %d: %s", code, errOut)
	}
}

func TestClientsCommandErrors(t *testing.T) {
	t.Parallel()
	env := newCPEnv(t)
	if code, out, errOut := env.run(t, "clients", "create", "taken", "--generate-key", filepath.Join(t.TempDir(), "k"), "--dpop", "--audience", "a"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errOut)
	}
	dir := t.TempDir()
	existingKey := writeTemp(t, "keep me")
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	privDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	privJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: edPriv, Algorithm: "EdDSA"}}})
	bad := adminCredentialOfRightShape()

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
		noFile   string // a file that must not exist afterwards
	}{
		{"no ID", []string{"clients", "create"}, 2, "accepts 1 arg", ""},
		{"two IDs", []string{"clients", "get", "a", "b"}, 2, "accepts 1 arg", ""},
		{"bad output", []string{"clients", "list", "-o", "yaml"}, 2, "--output", ""},
		{"bad profile", []string{"clients", "create", "x", "--profile", "fapi1"}, 2, "--profile", ""},
		{"bad auth method", []string{"clients", "create", "x", "--auth-method", "client_secret_basic"}, 2, "--auth-method", ""},
		{"unknown flag", []string{"clients", "create", "x", "--secret", "s"}, 2, "unknown flag", ""},
		{"refused by the server", []string{"clients", "create", "x", "--generate-key", filepath.Join(dir, "x.key"), "--audience", "a"},
			1, "400 invalid_client_metadata: FAPI 2.0 clients need sender-constrained tokens", filepath.Join(dir, "x.key")},
		{"exists", []string{"clients", "create", "taken", "--generate-key", filepath.Join(dir, "t.key"), "--dpop", "--audience", "a"},
			1, "409 client_exists", filepath.Join(dir, "t.key")},
		{"key file exists", []string{"clients", "create", "y", "--generate-key", existingKey, "--dpop", "--audience", "a"}, 1, "refusing to overwrite", ""},
		{"private key as public", []string{"clients", "create", "y", "--public-key", writePEM(t, "PRIVATE KEY", privDER), "--dpop", "--audience", "a"}, 1, "holds a private key", ""},
		{"private JWKS", []string{"clients", "create", "y", "--jwks-file", writeTemp(t, string(privJWKS)), "--dpop", "--audience", "a"}, 1, "private or symmetric", ""},
		{"not a certificate", []string{"clients", "create", "y", "--cert", writeTemp(t, "nope"), "--dpop", "--audience", "a"}, 1, "no PEM certificate", ""},
		{"update unknown", []string{"clients", "update", "nobody", "--scope", "a"}, 1, "404 not_found", ""},
		{"wrong credential", []string{"clients", "list", "--credential-file", writeTemp(t, bad)}, 1, "401 unauthenticated", ""},
		{"missing dev.json", []string{"clients", "list", "--dev-json", "/nonexistent/dev.json"}, 1, "dev.json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := tt.args
			if !strings.Contains(strings.Join(args, " "), "--dev-json") {
				args = append(args, "--dev-json", env.devJSON)
			}
			code := Main(args, strings.NewReader(""), &out, &errOut)
			if code != tt.wantCode || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Fatalf("exit %d, want %d; stderr %q, want %q", code, tt.wantCode, errOut.String(), tt.wantErr)
			}
			if tt.noFile != "" {
				if _, err := os.Stat(tt.noFile); !os.IsNotExist(err) {
					t.Fatalf("%s was left behind by a failed registration", tt.noFile)
				}
			}
		})
	}
	if b, _ := os.ReadFile(existingKey); string(b) != "keep me" {
		t.Fatal("an existing key file was overwritten")
	}
	// Refused input changed nothing.
	list, err := env.srv.Identity().ListClients(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != "taken" {
		t.Fatalf("clients after refused input: %v %v", list, err)
	}
}

func adminCredentialOfRightShape() string {
	return "bwk_" + strings.Repeat("0", 16) + "_" + strings.Repeat("A", 43)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDev runs `bulwark dev` in-process until the test ends and returns
// its banner and dev.json.
func startDev(t *testing.T, dataDir string) (banner string, info *devinfo.Info, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	root := NewRootCommand()
	root.SetArgs([]string{"dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0"})
	root.SetOut(&out)
	root.SetErr(&errOut)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("dev: %v\n%s", err, errOut.String())
			}
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), "Press Ctrl-C"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s\n%s", out.String(), errOut.String())
		}
	}
	info, err := devinfo.Read(filepath.Join(dataDir, devinfo.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if pw, err := os.ReadFile(filepath.Join(dataDir, demoPasswordFile)); err == nil && strings.Contains(errOut.String(), strings.TrimSpace(string(pw))) {
		t.Fatal("the demo user's password reached the logs")
	}
	return out.String(), info, stop
}

func TestDevProvisionsDemoIdentities(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	banner, info, stop := startDev(t, dataDir)

	if info.Issuer != info.ControlPlaneURL || info.DemoUser == nil || info.DemoClient == nil ||
		info.DemoUser.Username != "demo" || info.DemoClient.ClientID != "demo-client" {
		t.Fatalf("dev.json: %+v", info)
	}
	for path, mode := range map[string]os.FileMode{info.DemoUser.PasswordFile: 0o600, info.DemoClient.PrivateKeyFile: 0o600, info.DemoClient.CertificateFile: 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v, want mode %v", path, fi, err, mode)
		}
	}
	pw, _ := os.ReadFile(info.DemoUser.PasswordFile)
	password := strings.TrimSpace(string(pw))
	if len(password) < 12 || !strings.Contains(banner, password) {
		t.Fatal("the first start did not show the demo user's password")
	}
	curl := tokenCurl(*info)
	if !strings.Contains(banner, curl) || !strings.Contains(curl, "--cert "+info.DemoClient.CertificateFile) {
		t.Fatalf("banner lacks the token command %q:\n%s", curl, banner)
	}

	// The demo client gets a certificate-bound token with its key pair, as
	// the banner's curl does.
	pair, err := tls.LoadX509KeyPair(info.DemoClient.CertificateFile, info.DemoClient.PrivateKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(info.CACertFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	resp, err := hc.PostForm(info.Issuer+identity.PathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo-client"}, "scope": {"accounts:read"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("token: %d %+v %v", resp.StatusCode, tok, err)
	}
	firstKID := demoClientKID(t, info)
	stop()

	// A restart keeps everything and shows no secret again.
	banner, info2, _ := startDev(t, dataDir)
	if strings.Contains(banner, password) || !strings.Contains(banner, "password in "+info.DemoUser.PasswordFile) {
		t.Fatalf("the second start showed the password again, or not where it is:\n%s", banner)
	}
	if pw2, _ := os.ReadFile(info.DemoUser.PasswordFile); string(pw2) != string(pw) {
		t.Fatal("the demo password changed across restarts")
	}
	if kid := demoClientKID(t, info2); kid != firstKID {
		t.Fatalf("the demo client's key changed across restarts: %s, then %s", firstKID, kid)
	}
}

// demoClientKID returns the key ID registered for the demo client, after
// checking that it is the certificate in the data directory.
func demoClientKID(t *testing.T, info *devinfo.Info) string {
	t.Helper()
	cred, err := os.ReadFile(info.AdminCredentialFile)
	if err != nil {
		t.Fatal(err)
	}
	env := &cpEnv{devJSON: filepath.Join(info.DataDir, devinfo.FileName), cred: strings.TrimSpace(string(cred))}
	c := env.getClient(t, "demo-client")
	cert, err := readCertificatePEM(info.DemoClient.CertificateFile)
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenEndpointAuthMethod != identity.AuthSelfSignedTLSClient || !c.TLSClientCertificateBoundAccessTokens ||
		len(c.JWKS.Keys) != 1 || len(c.JWKS.Keys[0].Certificates) != 1 || !c.JWKS.Keys[0].Certificates[0].Equal(cert) {
		t.Fatalf("demo client: %+v", c)
	}
	want, err := identity.NewClientKey(cert.PublicKey, cert)
	if err != nil || c.JWKS.Keys[0].KeyID != want.KeyID {
		t.Fatalf("demo client kid %s, want %s", c.JWKS.Keys[0].KeyID, want.KeyID)
	}
	return c.JWKS.Keys[0].KeyID
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"/tmp/bulwark/data/demo-client.crt", "/tmp/bulwark/data/demo-client.crt"},
		{"https://127.0.0.1:8443/oauth2/token", "https://127.0.0.1:8443/oauth2/token"},
		{"/home/a b/x", "'/home/a b/x'"},
		{"it's", `'it'\''s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
