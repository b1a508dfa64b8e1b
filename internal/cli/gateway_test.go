package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/egress"
	"github.com/bulwarksec/bulwark/internal/gateway"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit/redistest"
	"github.com/bulwarksec/bulwark/internal/spool"
)

func TestGatewayCommandRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := write("exchange.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	goodRoutes := write("routes.yaml", "routes:\n  - {name: a, methods: [GET], path: /a, service: s}\n")
	badRoutes := write("bad.yaml", "routes:\n  - name: a\n    colour: red\n")
	notKey := write("not.key", "hello")
	for _, tc := range []struct {
		name, gateway, want string
	}{
		{"no routes file", "exchange_key_file: " + keyFile, "gateway.routes_file is required"},
		{"no exchange key", "routes_file: " + goodRoutes, "gateway.exchange_key_file is required"},
		{"bad routes", "routes_file: " + badRoutes + "\n  exchange_key_file: " + keyFile, `bad.yaml:3: unknown key "colour"`},
		{"bad key", "routes_file: " + goodRoutes + "\n  exchange_key_file: " + notKey, "not a PEM PRIVATE KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := write(strings.ReplaceAll(tc.name, " ", "-")+".yaml",
				"data_dir: "+filepath.Join(dir, "data")+"\ngateway:\n  workload_api_socket: "+filepath.Join(dir, "none.sock")+"\n  "+tc.gateway+"\n")
			var stdout, stderr bytes.Buffer
			code := Main([]string{"gateway", "--config", cfg}, strings.NewReader(""), &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr.String(), tc.want)
			}
		})
	}
	var stderr bytes.Buffer
	if code := Main([]string{"gateway", "--replicas", "0"}, strings.NewReader(""), &bytes.Buffer{}, &stderr); code != 2 {
		t.Fatalf("--replicas 0: exit %d %s", code, stderr.String())
	}
}

// gatewayTestFiles writes a routes file and an exchange key into dir.
func gatewayTestFiles(t *testing.T, dir string) (routes, key string) {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	key, routes = filepath.Join(dir, "exchange.key"), filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(routes, []byte("routes:\n  - {name: a, methods: [GET], path: /a, service: s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return routes, key
}

// closedURL returns an https URL on loopback where nothing listens: a
// control plane that is down.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "https://" + addr
}

// spooledEvents opens the spool in dir (the gateway has released it) and
// returns its unacknowledged events.
func spooledEvents(t *testing.T, dir string) []audit.Event {
	t.Helper()
	sp, err := spool.Open(dir, spool.Config{})
	if err != nil {
		t.Fatalf("open spool %s: %v", dir, err)
	}
	defer sp.Close()
	b, err := sp.Read(1000)
	if err != nil {
		t.Fatalf("read spool: %v", err)
	}
	var out []audit.Event
	for _, rec := range b.Records {
		var ev audit.Event
		if err := json.Unmarshal(rec, &ev); err != nil {
			t.Fatalf("spooled record %s: %v", rec, err)
		}
		out = append(out, ev)
	}
	return out
}

// An issuer URL that points at cloud metadata or at a loopback service that
// is not the control plane is an SSRF attempt through the configuration:
// bulwark gateway refuses to start, names the address, and the refusal is
// in the audit spool although the control plane is unreachable.
func TestGatewayRefusesBlockedIssuer(t *testing.T) {
	t.Parallel()
	// Something on loopback that is not the control plane.
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the gateway connected to the blocked issuer")
	}))
	t.Cleanup(other.Close)
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	for _, tc := range []struct {
		name, issuer, host, reason string
		severity                   int
	}{
		{"cloud metadata", "https://169.254.169.254/", "169.254.169.254", egress.ReasonMetadata, 4},
		{"loopback service", "https://127.0.0.1:" + otherPort + "/", "127.0.0.1", egress.ReasonLoopback, 3},
		{"localhost name", "https://localhost:" + otherPort, "localhost", egress.ReasonLocalhostName, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			routes, key := gatewayTestFiles(t, dir)
			spoolDir := filepath.Join(dir, "spool")
			cfg := filepath.Join(dir, "bulwark.yaml")
			yaml := fmt.Sprintf("data_dir: %s\ngateway:\n  workload_api_socket: /nonexistent/bulwark-test.sock\n  routes_file: %s\n"+
				"  exchange_key_file: %s\n  server_url: %s\n  issuer: %s\n  spool_dir: %s\n",
				filepath.Join(dir, "data"), routes, key, closedURL(t), tc.issuer, spoolDir)
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := Main([]string{"gateway", "--config", cfg}, strings.NewReader(""), &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), "gateway.issuer") || !strings.Contains(stderr.String(), tc.host) ||
				!strings.Contains(stderr.String(), tc.reason) {
				t.Fatalf("exit %d, stderr %q; want a refusal naming %s (%s)", code, stderr.String(), tc.host, tc.reason)
			}
			if strings.Contains(stdout.String(), "listening") {
				t.Fatalf("the gateway started: %s", stdout.String())
			}
			evs := spooledEvents(t, spoolDir)
			if len(evs) != 1 {
				t.Fatalf("%d events spooled, want 1: %+v", len(evs), evs)
			}
			ev := evs[0]
			if ev.ClassUID != 4001 || ev.StatusID != audit.StatusFailure || ev.StatusDetail != tc.reason || ev.SeverityID != tc.severity ||
				len(ev.Resources) != 1 || ev.Resources[0].Name != tc.host || ev.Metadata.Product != gatewayAuditProduct ||
				ev.Metadata.UID == "" || ev.Unmapped["config_key"] != "gateway.issuer" {
				t.Fatalf("spooled event %+v", ev)
			}
		})
	}
}

// The control plane's own URL is the explicit exception: on loopback in
// dev, as the issuer, it passes the egress check (start then goes on to
// ask the agent for the SVID, which this test's canceled context ends) and
// nothing is reported.
func TestGatewayAllowsLoopbackControlPlaneIssuer(t *testing.T) {
	t.Parallel()
	serverURL := closedURL(t)
	for _, tc := range []struct{ name, issuer string }{
		{"issuer defaults to the control plane", ""},
		{"issuer is the control plane", serverURL + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			routes, key := gatewayTestFiles(t, dir)
			spoolDir := filepath.Join(dir, "spool")
			cfg := filepath.Join(dir, "bulwark.yaml")
			yaml := fmt.Sprintf("data_dir: %s\ngateway:\n  workload_api_socket: /nonexistent/bulwark-test.sock\n  routes_file: %s\n"+
				"  exchange_key_file: %s\n  server_url: %s\n  spool_dir: %s\n",
				filepath.Join(dir, "data"), routes, key, serverURL, spoolDir)
			if tc.issuer != "" {
				yaml += "  issuer: " + tc.issuer + "\n"
			}
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			root := NewRootCommand()
			root.SetArgs([]string{"gateway", "--config", cfg})
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), "gateway SVID") || strings.Contains(err.Error(), "egress") {
				t.Fatalf("err %v, want to have passed the issuer check and stopped at the SVID", err)
			}
			if evs := spooledEvents(t, spoolDir); len(evs) != 0 {
				t.Fatalf("events spooled for the control plane's own URL: %+v", evs)
			}
		})
	}
}

func TestServeGatewayMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_gateway_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	addr := freeLoopbackAddr(t)
	if err := serveGatewayMetrics(gctx, g, addr, reg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "bulwark_gateway_test_total 1") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, body)
	}
	// A second listener on the same address is refused with the key named.
	if err := serveGatewayMetrics(gctx, g, addr, reg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "gateway.metrics_listen") {
		t.Fatalf("second listener: %v", err)
	}
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// freeLoopbackAddr returns a loopback address with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestGatewayTracerExportsOTLP(t *testing.T) {
	got := make(chan string, 16)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + r.Header.Get("Content-Type") + " " + strconv.Itoa(len(body))
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()

	none, err := gatewayTracer(context.Background(), "")
	if err != nil || none != nil || tracerProvider(none) != nil {
		t.Fatalf("no endpoint: %v %v", none, err)
	}
	tp, err := gatewayTracer(context.Background(), collector.URL+"/v1/traces")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "gateway POST")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-got:
		if !strings.HasPrefix(req, "POST /v1/traces application/x-protobuf ") || strings.HasSuffix(req, " 0") {
			t.Fatalf("the collector got %q", req)
		}
	default:
		t.Fatal("no span reached the collector")
	}
}

// The shared (Redis) limiters of bulwark gateway count their refusals in
// the gateway's registry, beside the local limiters' family.
func TestGatewaySharedLimitersCountRefusals(t *testing.T) {
	t.Parallel()
	redistest.New(t) // fails, never skips, without the test Redis
	reg := prometheus.NewRegistry()
	one := ratelimit.Limit{Rate: 0.01, Burst: 1} // one request per 100 s: no refill while the test runs
	routes := &gateway.Routes{PerIP: one, PerClient: one, PerUser: one}
	limiters, closeRedis, err := gatewayLimiters(redistest.Addr(), routes, 1, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeRedis()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	key := "client:test-" + fmt.Sprintf("%x", b) // a key no other run shares
	for i, want := range []bool{true, false} {
		res, err := limiters.Client.Allow(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed != want || res.Degraded {
			t.Fatalf("request %d: %+v, want allowed %v from Redis", i, res, want)
		}
	}
	// The gateway registers its own rate-limit metrics on the same registry.
	if _, err := ratelimit.NewMetrics(reg); err != nil {
		t.Fatalf("the gateway's metrics on the same registry: %v", err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, f := range families {
		if f.GetName() != "bulwark_ratelimit_limited_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limiter" && l.GetValue() == "gateway-client" {
					got = m.GetCounter().GetValue()
				}
			}
		}
	}
	if got != 1 {
		t.Fatalf("limited_requests_total{limiter=gateway-client} = %v, want 1", got)
	}
}
