package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// start runs a control plane on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg config.Config) (*controlplane.Server, *http.Client) {
	t.Helper()
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
	pem, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(srv.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv, client
}

func TestControlPlaneServesOverTLS(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.DataDir = t.TempDir()
			if d == store.Postgres {
				cfg.Store.Driver = config.DriverPostgres
				cfg.Store.DSN = storetest.NewPostgresSchema(t)
			}
			srv, client := start(t, cfg)

			if srv.NewAdminCredential == "" || !strings.HasPrefix(srv.NewAdminCredential, "bwk_") {
				t.Fatalf("first start created no admin credential: %q", srv.NewAdminCredential)
			}
			saved, err := os.ReadFile(srv.AdminCredentialPath())
			if err != nil || strings.TrimSpace(string(saved)) != srv.NewAdminCredential {
				t.Fatalf("saved credential: %v", err)
			}
			for _, name := range []string{srv.AdminCredentialPath(), filepath.Join(cfg.DataDir, "keys", "kek")} {
				if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, %v; want 0600", name, fi.Mode().Perm(), err)
				}
			}

			for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/audit/checkpoint", "/v1/audit/key"} {
				resp, err := client.Get(srv.URL() + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
				}
				if path == "/metrics" && !bytes.Contains(body, []byte("bulwark_audit_tree_size")) {
					t.Errorf("metrics lack the audit gauges")
				}
			}

			req, _ := http.NewRequest(http.MethodPost, srv.URL()+"/v1/audit/events",
				strings.NewReader(`{"events":[{"class_name":"Authentication","activity_name":"Logon","status_id":1}]}`))
			req.Header.Set("Authorization", "Bearer "+srv.NewAdminCredential)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("append: %d %s", resp.StatusCode, body)
			}

			// Unknown endpoints get a JSON 404 with a request ID, not a stack.
			resp, err = client.Get(srv.URL() + "/v1/nope")
			if err != nil {
				t.Fatal(err)
			}
			var eb struct {
				Error struct{ Code, RequestID string } `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || eb.Error.Code != "not_found" || resp.Header.Get("X-Request-ID") == "" {
				t.Fatalf("unknown path: %d %+v", resp.StatusCode, eb)
			}
		})
	}
}

func TestControlPlaneRefusesOldTLS(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.TLS.MinVersion = "1.3"
	srv, _ := start(t, cfg)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12} {
		conn, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v}) //nolint:gosec // the test probes the server's floor
		if err == nil {
			conn.Close()
			t.Errorf("TLS version %x accepted with min_version 1.3", v)
		}
	}
	// Plain HTTP to the TLS port gets no answer from the API.
	resp, err := http.Get("http://" + srv.Addr().String() + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "ok") {
			t.Fatal("plaintext HTTP served the API")
		}
	}
}

func TestSecondStartKeepsKeysAndCredential(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.ResolvePaths()
	var keys []string
	for i := 0; i < 2; i++ {
		srv, err := controlplane.New(context.Background(), &cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if (i == 0) != (srv.NewAdminCredential != "") {
			t.Fatalf("start %d: new credential %q", i, srv.NewAdminCredential)
		}
		keys = append(keys, srv.AuditLog().VerifierKey())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if keys[0] != keys[1] {
		t.Fatal("audit key changed across restarts")
	}
	// Changing the origin of an existing log is refused.
	cfg.Audit.Origin = "other.example/audit"
	if _, err := controlplane.New(context.Background(), &cfg, nil); err == nil || !strings.Contains(err.Error(), "origin") {
		t.Fatalf("origin change: %v", err)
	}
}

func TestControlPlaneServesIdentity(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.DataDir = t.TempDir()
			if d == store.Postgres {
				cfg.Store.Driver = config.DriverPostgres
				cfg.Store.DSN = storetest.NewPostgresSchema(t)
			}
			srv, client := start(t, cfg)
			if srv.Issuer() != srv.URL() || srv.Identity() == nil {
				t.Fatalf("issuer %q, URL %q", srv.Issuer(), srv.URL())
			}

			// Discovery names the bound address (port 0 was asked for).
			var meta struct {
				Issuer        string `json:"issuer"`
				TokenEndpoint string `json:"token_endpoint"`
				JWKSURI       string `json:"jwks_uri"`
			}
			getJSON(t, client, srv.URL()+"/.well-known/openid-configuration", &meta)
			if meta.Issuer != srv.URL() || meta.TokenEndpoint != srv.URL()+"/oauth2/token" {
				t.Fatalf("discovery: %+v", meta)
			}
			var jwks struct {
				Keys []map[string]any `json:"keys"`
			}
			getJSON(t, client, meta.JWKSURI, &jwks)
			if len(jwks.Keys) == 0 || jwks.Keys[0]["alg"] != "EdDSA" {
				t.Fatalf("jwks: %+v", jwks)
			}

			// The client admin API needs the admin credential.
			reg := `{"client_id":"svc","token_endpoint_auth_method":"self_signed_tls_client_auth","profile":"oauth2",
				"jwks":{"keys":[]},"grant_types":["client_credentials"],"scopes":["a"],"audiences":["api"]}`
			for _, tc := range []struct {
				name, cred string
				want       int
			}{
				{"no credential", "", http.StatusUnauthorized},
				{"wrong credential", "bwk_0000000000000000_" + strings.Repeat("A", 43), http.StatusUnauthorized},
				{"admin", srv.NewAdminCredential, http.StatusBadRequest}, // authenticated: the empty JWKS is refused
			} {
				req, _ := http.NewRequest(http.MethodPost, srv.URL()+"/v1/identity/clients", strings.NewReader(reg))
				req.Header.Set("Content-Type", "application/json")
				if tc.cred != "" {
					req.Header.Set("Authorization", "Bearer "+tc.cred)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
				}
			}
			if _, err := srv.Identity().GetClient(context.Background(), "svc"); err == nil {
				t.Fatal("a refused registration was stored")
			}

			// The listener asks for a client certificate (mTLS client
			// authentication and certificate-bound tokens) but does not
			// require one: the clients above presented none.
			asked := false
			conn, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{
				RootCAs: client.Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1",
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					asked = true
					return &tls.Certificate{}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if !asked {
				t.Fatal("the control plane did not request a client certificate")
			}
		})
	}
}

func TestControlPlaneConfiguredIssuer(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Identity.Issuer = "https://id.bank.example"
	srv, client := start(t, cfg)
	if srv.Issuer() != "https://id.bank.example" {
		t.Fatalf("issuer %q", srv.Issuer())
	}
	var meta struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	getJSON(t, client, srv.URL()+"/.well-known/oauth-authorization-server", &meta)
	if meta.Issuer != "https://id.bank.example" || meta.TokenEndpoint != "https://id.bank.example/oauth2/token" {
		t.Fatalf("metadata: %+v", meta)
	}
}

// TestShutdownEndsLongPolls checks that a revocation-feed long poll does
// not hold the shutdown for its whole wait.
func TestShutdownEndsLongPolls(t *testing.T) {
	t.Parallel()
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
	pem, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var after int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var feed struct {
			Next int64 `json:"next"`
		}
		if getJSONErr(client, srv.URL()+"/oauth2/revocations?after=0", &feed) == nil {
			after = feed.Next
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revocation feed not served")
		}
	}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		resp, err := client.Get(fmt.Sprintf("%s/oauth2/revocations?after=%d&wait=30", srv.URL(), after))
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the poll is waiting
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("shutdown took %s with a long poll open", d)
	}
	<-polled
}

func getJSON(t *testing.T, client *http.Client, url string, v any) {
	t.Helper()
	if err := getJSONErr(client, url, v); err != nil {
		t.Fatal(err)
	}
}

func getJSONErr(client *http.Client, url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
