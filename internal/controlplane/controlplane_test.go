package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
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
	tests := []struct{ name, feed string }{
		{"token revocations", "/oauth2/revocations"},
		{"CA deny list", ca.PathDenyList},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
				if getJSONErr(client, srv.URL()+tt.feed+"?after=0", &feed) == nil {
					after = feed.Next
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s not served", tt.feed)
				}
			}
			polled := make(chan struct{})
			go func() {
				defer close(polled)
				resp, err := client.Get(fmt.Sprintf("%s%s?after=%d&wait=30", srv.URL(), tt.feed, after))
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
		})
	}
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

// TestControlPlaneServesCA: the workload CA is wired: its admin API needs
// the admin credential, an agent joins with a token through the real
// client and then authenticates with its SVID, and the gauges are served.
func TestControlPlaneServesCA(t *testing.T) {
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
			if srv.CA() == nil || srv.CA().TrustDomain().Name() != cfg.CA.TrustDomain {
				t.Fatal("no CA, or the wrong trust domain")
			}
			admin := func(cred, method, path, body string) (int, []byte) {
				req, _ := http.NewRequest(method, srv.URL()+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if cred != "" {
					req.Header.Set("Authorization", "Bearer "+cred)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, b
			}
			if st, _ := admin("", http.MethodPost, ca.PathJoinTokens, `{"agent":"node-1"}`); st != http.StatusUnauthorized {
				t.Fatalf("join token without the admin credential: %d", st)
			}
			if st, _ := admin("bwk_not-the-credential", http.MethodGet, ca.PathEntries, ""); st != http.StatusUnauthorized {
				t.Fatalf("entries with a wrong credential: %d", st)
			}
			st, body := admin(srv.NewAdminCredential, http.MethodPost, ca.PathJoinTokens, `{"agent":"node-1"}`)
			var tok ca.JoinTokenAnswer
			if st != http.StatusCreated || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
				t.Fatalf("join token: %d %s", st, body)
			}

			pemBytes, err := os.ReadFile(srv.CAFile())
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pemBytes)
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			res, err := caclient.New(srv.URL(), pool).Join(ctx, tok.Token, csr)
			if err != nil {
				t.Fatalf("join: %v", err)
			}
			if res.ID.String() != "spiffe://"+cfg.CA.TrustDomain+"/agent/node-1" {
				t.Fatalf("agent ID %s", res.ID)
			}
			cert := tls.Certificate{PrivateKey: key, Leaf: res.SVID[0]}
			for _, c := range res.SVID {
				cert.Certificate = append(cert.Certificate, c.Raw)
			}
			agent := caclient.New(srv.URL(), pool).WithCertificate(cert)
			if st, body := admin(srv.NewAdminCredential, http.MethodPost, ca.PathEntries,
				`{"spiffe_id":"spiffe://`+cfg.CA.TrustDomain+`/ns/bank/sa/payments","selectors":["unix:uid:1001"]}`); st != http.StatusCreated {
				t.Fatalf("create entry: %d %s", st, body)
			}
			entries, err := agent.Entries(ctx)
			if err != nil || len(entries) != 1 {
				t.Fatalf("agent entries: %v %v", entries, err)
			}
			if _, err := caclient.New(srv.URL(), pool).Entries(ctx); !caclient.IsCode(err, "unauthenticated") {
				t.Fatalf("entries without an agent SVID: %v", err)
			}
			b, err := caclient.New(srv.URL(), pool).Bundle(ctx)
			if err != nil || len(b.X509Authorities()) == 0 {
				t.Fatalf("bundle: %v", err)
			}
			resp, err := client.Get(srv.URL() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Contains(metrics, []byte("bulwark_ca_intermediate_expiry_seconds")) {
				t.Fatal("metrics lack the CA gauges")
			}
		})
	}
}
