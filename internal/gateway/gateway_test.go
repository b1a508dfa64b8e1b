package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/gateway/upstream"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/dpop"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

const testRoutesYAML = `
rate_limits:
  per_ip: {rate: 1000, burst: 1000}
  per_client: {rate: 1000, burst: 1000}
  per_user: {rate: 0.01, burst: 5}
audit_allowed: true
routes:
  - name: payments-create
    methods: [POST]
    path: /v1/payments
    service: payments
    scopes: [payments:write]
    openapi: openapi.yaml
    max_body_bytes: 1KiB
  - name: payments-read
    methods: [GET]
    path: /v1/payments
    service: payments
    scopes: [accounts:read]
    waf: block
  - name: payments-search
    methods: [GET]
    path: /v1/search
    service: payments
    upstream_path: /v1/payments
    waf: detect
  - name: admin
    methods: [GET]
    path: /v1/admin
    service: payments
  - name: flaky
    methods: [GET]
    path: /v1/flaky
    service: flaky
    waf: off
    retries: 0
`

const testOpenAPI = `openapi: 3.0.3
info: {title: payments, version: "1"}
paths:
  /v1/payments:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [amount, to]
              properties:
                amount: {type: integer, minimum: 1}
                to: {type: string, maxLength: 34}
      responses:
        "200": {description: ok}
`

const testPolicies = `
@id("routes")
permit(principal, action, resource is Bulwark::Route);
@id("no-admin")
forbid(principal, action, resource == Bulwark::Route::"admin");
`

// gwEnv is a gateway with a test issuer, the payments service behind a real
// mesh Inbound, and a failing "flaky" service behind another.
type gwEnv struct {
	iss      *testIssuer
	events   *recorder
	echo     *echo
	flaky    atomic.Int64
	gw       *Gateway
	url      string
	client   *http.Client
	spans    *tracetest.SpanRecorder
	exchange *Exchanger
	reg      *prometheus.Registry
	logs     *syncBuffer
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func newEnv(t testing.TB) *gwEnv { return newEnvRoutes(t, testRoutesYAML) }

// newEnvRoutes is newEnv with another routes file.
func newEnvRoutes(t testing.TB, routesYAML string) *gwEnv {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "routes.yaml"), []byte(routesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "openapi.yaml"), []byte(testOpenAPI), 0o600); err != nil {
		t.Fatal(err)
	}
	routes, err := LoadRoutes(filepath.Join(dir, "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	e := &gwEnv{iss: newTestIssuer(t), events: &recorder{}, echo: &echo{}, spans: tracetest.NewSpanRecorder(),
		reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	ca := mtlstest.NewCA(t, testTD)
	payments := startInbound(t, ca, testPaymentsID, e.echo, e.iss.verifier(t, testPaymentsID, nil))
	flaky := startInbound(t, ca, testFlakyID, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		e.flaky.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	}), nil)
	resolver := staticResolver{}
	resolver["payments"] = struct {
		id        spiffeid.ID
		endpoints []string
	}{spiffeid.RequireFromString(testPaymentsID), []string{payments}}
	resolver["flaky"] = struct {
		id        spiffeid.ID
		endpoints []string
	}{spiffeid.RequireFromString(testFlakyID), []string{flaky}}

	decider, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"gateway.cedar": testPolicies}})
	if err != nil {
		t.Fatal(err)
	}
	e.exchange, err = NewExchanger(ExchangerConfig{TokenURL: e.iss.url + "/token", ClientID: testExchangeCID, Key: e.iss.clientKey,
		HTTPClient: e.iss.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	certFile, keyFile, roots := writeServingCert(t, dir)
	e.gw, err = New(Config{Routes: routes, CertFile: certFile, KeyFile: keyFile,
		Breaker: upstream.BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}}, Deps{
		Verifier:       e.iss.verifier(t, testAudience, nil),
		Decider:        decider,
		Resolver:       resolver,
		Source:         staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()},
		Exchanger:      e.exchange,
		Events:         e.events,
		TracerProvider: tp,
		Logger:         slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:     e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.url, e.client = serveGateway(t, e.gw, roots)
	return e
}

// do sends a request and returns the response status, headers and body.
func (e *gwEnv) do(t testing.TB, method, path, body string, hdr http.Header) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func TestGatewayForwardsAnAllowedRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.iss.token(map[string]any{"sub": "usr_happy"})
	hdr := bearer(tok)
	hdr.Set("X-Request-ID", "req-happy-1")
	hdr.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	status, h, body := e.do(t, http.MethodPost, "/v1/payments", `{"amount":100,"to":"GB33BUKB20201555555555"}`, hdr)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	if h.Get("X-Request-ID") != "req-happy-1" {
		t.Errorf("X-Request-ID echoed %q", h.Get("X-Request-ID"))
	}
	seen, path, got := e.echo.seen()
	if path != "/v1/payments" || got != `{"amount":100,"to":"GB33BUKB20201555555555"}` {
		t.Errorf("upstream saw %s %q", path, got)
	}
	if seen.Get("Authorization") != "" || strings.Contains(fmt.Sprint(seen), tok) {
		t.Error("the external token reached the service")
	}
	if seen.Get("X-Bulwark-User") != "usr_happy" || seen.Get("X-Bulwark-Client") != testExchangeCID {
		t.Errorf("identity headers %q %q", seen.Get("X-Bulwark-User"), seen.Get("X-Bulwark-Client"))
	}
	if seen.Get("X-Request-ID") != "req-happy-1" || !strings.HasPrefix(seen.Get("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-") {
		t.Errorf("correlation lost: %q %q", seen.Get("X-Request-ID"), seen.Get("traceparent"))
	}
	e.iss.mu.Lock()
	auds := slices.Clone(e.iss.audiences)
	e.iss.mu.Unlock()
	if len(auds) != 1 || auds[0] != testPaymentsID {
		t.Errorf("exchanged for %v", auds)
	}
	// A second request reuses the cached internal token.
	hdr.Del("X-Request-ID")
	if status, _, body := e.do(t, http.MethodPost, "/v1/payments", `{"amount":1,"to":"x"}`, hdr); status != http.StatusOK {
		t.Fatalf("second: %d %s", status, body)
	}
	if n := e.iss.exchanges.Load(); n != 1 {
		t.Errorf("%d exchanges, want 1", n)
	}
	evs := e.events.find("req-happy-1")
	if len(evs) != 1 || evs[0].ClassUID != classAPIActivity || evs[0].StatusID != audit.StatusSuccess || evs[0].ActivityID != activityCreate ||
		evs[0].Metadata.TraceUID != "0af7651916cd43dd8448eb211c80319c" || evs[0].Actor == nil || evs[0].Actor.User.UID != "usr_happy" {
		t.Fatalf("events %+v", evs)
	}
	// The span carries the security context, never the token.
	var found bool
	for _, s := range e.spans.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.String(), tok) {
				t.Fatalf("span attribute %s holds the token", a.Key)
			}
			if a.Key == attrRoute && a.Value.AsString() == "payments-create" {
				found = true
			}
		}
	}
	if !found {
		t.Error("no span with bulwark.route")
	}
}

// TestGatewayAttacks: every attack is refused and audited.
func TestGatewayAttacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	_, dpopKeyA, _ := ed25519.GenerateKey(rand.Reader)
	_, dpopKeyB, _ := ed25519.GenerateKey(rand.Reader)
	signerA, _ := dpop.NewSigner(dpopKeyA)
	signerB, _ := dpop.NewSigner(dpopKeyB)
	sqli := "/v1/payments?q=%27%20OR%201%3D1--"
	sqliDetect := "/v1/search?q=%27%20OR%201%3D1--"
	const payment = `{"amount":100,"to":"GB33"}`

	for _, tc := range []struct {
		name       string
		method     string
		path, body string
		hdr        func(sub string) http.Header
		status     int
		class      int
		details    []string // one of these
		reached    bool     // the request reaches the service
		check      func(t *testing.T, h http.Header, body string)
	}{
		{name: "no token", method: "GET", path: "/v1/payments", hdr: func(string) http.Header { return nil },
			status: 401, class: classAuthentication, details: []string{"missing_token"},
			check: func(t *testing.T, h http.Header, _ string) {
				if h.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate")
				}
			}},
		{name: "expired", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			old := time.Now().Add(-time.Hour)
			return bearer(e.iss.token(map[string]any{"sub": sub, "exp": old.Add(5 * time.Minute).Unix(), "iat": old.Unix(), "nbf": old.Unix()}))
		}, status: 401, class: classAuthentication, details: []string{"expired"}},
		{name: "forged signature", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			return bearer(e.iss.tokenWith(otherKey, map[string]any{"sub": sub}))
		}, status: 401, class: classAuthentication, details: []string{"bad_signature"}},
		{name: "another audience", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			return bearer(e.iss.token(map[string]any{"sub": sub, "aud": "other-api"}))
		}, status: 401, class: classAuthentication, details: []string{"wrong_audience"}},
		{name: "dpop proof of another key", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			tok := e.iss.token(map[string]any{"sub": sub, "cnf": map[string]any{"jkt": signerA.Thumbprint()}})
			proof, err := signerB.Proof("GET", e.url+"/v1/payments", "", tok)
			if err != nil {
				t.Fatal(err)
			}
			return http.Header{"Authorization": {"DPoP " + tok}, "Dpop": {proof}}
		}, status: 401, class: classAuthentication, details: []string{"binding_mismatch", "dpop_invalid"}},
		{name: "valid dpop proof passes", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			tok := e.iss.token(map[string]any{"sub": sub, "cnf": map[string]any{"jkt": signerA.Thumbprint()}})
			proof, err := signerA.Proof("GET", e.url+"/v1/payments", "", tok)
			if err != nil {
				t.Fatal(err)
			}
			return http.Header{"Authorization": {"DPoP " + tok}, "Dpop": {proof}}
		}, status: 200, class: classAPIActivity, details: []string{DetailAllowed}, reached: true,
			check: func(t *testing.T, _ http.Header, _ string) {
				if seen, _, _ := e.echo.seen(); seen.Get("Dpop") != "" || seen.Get("Authorization") != "" {
					t.Error("the caller's proof or token reached the service")
				}
			}},
		{name: "client-set identity header", method: "GET", path: "/v1/payments", hdr: func(sub string) http.Header {
			h := bearer(e.iss.token(map[string]any{"sub": sub}))
			h.Set("X-Bulwark-User", "usr_admin")
			h.Set("X-Forwarded-For", "10.0.0.1")
			return h
		}, status: 200, class: classAPIActivity, details: []string{DetailHeadersStripped}, reached: true,
			check: func(t *testing.T, _ http.Header, _ string) {
				seen, _, _ := e.echo.seen()
				if seen.Get("X-Bulwark-User") == "usr_admin" || seen.Get("X-Forwarded-For") == "10.0.0.1" {
					t.Error("a client-set header reached the service")
				}
			}},
		{name: "body over limit", method: "POST", path: "/v1/payments", body: `{"amount":1,"to":"` + strings.Repeat("a", 2048) + `"}`,
			hdr:    func(sub string) http.Header { return bearer(e.iss.token(map[string]any{"sub": sub})) },
			status: 413, class: classAPIActivity, details: []string{DetailInvalidRequest}},
		{name: "off-schema body", method: "POST", path: "/v1/payments", body: `{"amount":"lots","to":"GB33","admin":true}`,
			hdr:    func(sub string) http.Header { return bearer(e.iss.token(map[string]any{"sub": sub})) },
			status: 400, class: classAPIActivity, details: []string{DetailInvalidRequest}},
		{name: "sql injection waf block", method: "GET", path: sqli,
			hdr:    func(sub string) http.Header { return bearer(e.iss.token(map[string]any{"sub": sub})) },
			status: 403, class: classAPIActivity, details: []string{DetailWAFBlocked},
			check: func(t *testing.T, _ http.Header, body string) {
				if !strings.Contains(body, CodeRequestBlocked) {
					t.Errorf("body %s", body)
				}
			}},
		{name: "sql injection waf detect", method: "GET", path: sqliDetect,
			hdr:    func(sub string) http.Header { return bearer(e.iss.token(map[string]any{"sub": sub})) },
			status: 200, class: classAPIActivity, details: []string{DetailWAFDetected}, reached: true},
		{name: "missing scope", method: "POST", path: "/v1/payments", body: payment,
			hdr: func(sub string) http.Header {
				return bearer(e.iss.token(map[string]any{"sub": sub, "scope": "accounts:read"}))
			},
			status: 403, class: classAPIActivity, details: []string{DetailInsufficientScope},
			check: func(t *testing.T, h http.Header, _ string) {
				if !strings.Contains(h.Get("WWW-Authenticate"), "insufficient_scope") {
					t.Errorf("challenge %q", h.Get("WWW-Authenticate"))
				}
			}},
		{name: "cedar deny", method: "GET", path: "/v1/admin",
			hdr:    func(sub string) http.Header { return bearer(e.iss.token(map[string]any{"sub": sub})) },
			status: 403, class: classAPIActivity, details: []string{DetailDenied},
			check: func(t *testing.T, _ http.Header, body string) {
				if strings.Contains(body, "no-admin") {
					t.Error("the policy id leaked to the client")
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := "usr_" + strings.ReplaceAll(tc.name, " ", "_")
			rid := "rid-" + strings.ReplaceAll(tc.name, " ", "-")
			hdr := tc.hdr(sub)
			if hdr == nil {
				hdr = http.Header{}
			}
			hdr.Set("X-Request-ID", rid)
			before := e.echo.hits.Load()
			status, h, body := e.do(t, tc.method, tc.path, tc.body, hdr)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if reached := e.echo.hits.Load() > before; reached != tc.reached {
				t.Errorf("reached the service: %v, want %v", reached, tc.reached)
			}
			if status >= 400 && (!strings.Contains(body, `"request_id":"`+rid+`"`) || h.Get("Content-Type") != "application/json") {
				t.Errorf("error body %s", body)
			}
			var ok bool
			for _, ev := range e.events.find(rid) {
				if ev.ClassUID == tc.class && slices.Contains(tc.details, ev.StatusDetail) {
					ok = true
					if tc.class == classAuthentication && (ev.StatusID != audit.StatusFailure || ev.ActivityID != activityLogon) {
						t.Errorf("auth event %+v", ev)
					}
					if ev.Metadata.TraceUID == "" {
						t.Error("event without trace id")
					}
				}
			}
			if !ok {
				t.Errorf("no %d event %v among %+v", tc.class, tc.details, e.events.find(rid))
			}
			if tc.check != nil {
				tc.check(t, h, body)
			}
		})
	}
	// No event or log record ever holds a token.
	for _, ev := range e.events.all() {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), "eyJ") {
			t.Fatalf("event holds a token: %s", b)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, "eyJ") || !strings.Contains(logs, "gateway refused a request") {
		t.Fatalf("logs hold a token or no refusal:\n%s", logs)
	}
	// Every refusal is counted by reason.
	for _, reason := range []string{"missing_token", "expired", DetailWAFBlocked, DetailDenied, DetailInsufficientScope} {
		if v := testutil.ToFloat64(e.gw.metrics.refusals.WithLabelValues(reason)); v != 1 {
			t.Errorf("refusals{reason=%q} = %v, want 1", reason, v)
		}
	}
}

func TestGatewayFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.iss.token(map[string]any{"sub": "usr_flood"})
	var limited int
	for i := range 10 {
		hdr := bearer(tok)
		hdr.Set("X-Request-ID", fmt.Sprintf("flood-%d", i))
		status, h, _ := e.do(t, http.MethodGet, "/v1/payments", "", hdr)
		if status == http.StatusTooManyRequests {
			limited++
			if h.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			evs := e.events.find(fmt.Sprintf("flood-%d", i))
			if len(evs) != 1 || evs[0].StatusDetail != DetailRateLimited {
				t.Errorf("events %+v", evs)
			}
		}
	}
	if limited != 5 {
		t.Fatalf("%d requests limited, want 5 (burst 5)", limited)
	}
}

func TestGatewayFailsClosed(t *testing.T) {
	t.Parallel()
	t.Run("breaker", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		tok := e.iss.token(map[string]any{"sub": "usr_breaker"})
		for range 2 {
			if status, _, body := e.do(t, http.MethodGet, "/v1/flaky", "", bearer(tok)); status != http.StatusInternalServerError {
				t.Fatalf("status %d: %s", status, body)
			}
		}
		hits := e.flaky.Load()
		hdr := bearer(tok)
		hdr.Set("X-Request-ID", "breaker-open")
		status, h, _ := e.do(t, http.MethodGet, "/v1/flaky", "", hdr)
		if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
			t.Fatalf("open breaker: %d, Retry-After %q", status, h.Get("Retry-After"))
		}
		if e.flaky.Load() != hits {
			t.Error("the open breaker let a request through")
		}
		if evs := e.events.find("breaker-open"); len(evs) != 1 || evs[0].StatusDetail != DetailUpstreamFailed {
			t.Errorf("events %+v", evs)
		}
		// Degraded mode never skips authentication.
		if status, _, _ := e.do(t, http.MethodGet, "/v1/flaky", "", http.Header{"X-Request-ID": {"breaker-noauth"}}); status != http.StatusUnauthorized {
			t.Fatalf("no token while open: %d", status)
		}
		if evs := e.events.find("breaker-noauth"); len(evs) != 1 || evs[0].ClassUID != classAuthentication {
			t.Errorf("events %+v", evs)
		}
	})
	t.Run("token exchange down", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.iss.down.Store(true)
		hdr := bearer(e.iss.token(map[string]any{"sub": "usr_exchange"}))
		hdr.Set("X-Request-ID", "exchange-down")
		status, h, _ := e.do(t, http.MethodGet, "/v1/payments", "", hdr)
		if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
			t.Fatalf("status %d", status)
		}
		if e.echo.hits.Load() != 0 {
			t.Fatal("the upstream was called without an internal token")
		}
		if evs := e.events.find("exchange-down"); len(evs) != 1 || evs[0].StatusDetail != DetailExchangeFailed {
			t.Errorf("events %+v", evs)
		}
	})
}

func TestGatewayUnroutedAndMalformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"unknown path", "GET", "/v2/nothing", 404},
		{"prefix is not a segment", "GET", "/v1/paymentsX", 404},
		{"method not routed", "DELETE", "/v1/payments", 405},
		{"encoded slash", "GET", "/v1/payments%2F..%2Fadmin", 400},
		{"dot segment", "GET", "/v1/payments/./x", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+"/", nil)
			req.URL.Opaque = tc.path
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if n := e.echo.hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the service", n)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	rs, err := ParseRoutes([]byte("routes:\n  - {name: a, methods: [GET], path: /a, service: s, waf: \"off\"}\n"), "r.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	ca := mtlstest.NewCA(t, testTD)
	ev, _ := authz.NewEvaluator(authz.EvaluatorInput{})
	full := func() (Config, Deps) {
		return Config{Routes: rs}, Deps{Verifier: &authnFake{}, Decider: ev, Resolver: staticResolver{},
			Source: staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()}, Exchanger: &Exchanger{}, Events: &recorder{}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config, *Deps)
		want string
	}{
		{"no routes", func(c *Config, _ *Deps) { c.Routes = nil }, "routes are required"},
		{"no verifier", func(_ *Config, d *Deps) { d.Verifier = nil }, "verifier"},
		{"no decider", func(_ *Config, d *Deps) { d.Decider = nil }, "decider"},
		{"no resolver", func(_ *Config, d *Deps) { d.Resolver = nil }, "resolver"},
		{"no source", func(_ *Config, d *Deps) { d.Source = nil }, "SVID source"},
		{"no exchanger", func(_ *Config, d *Deps) { d.Exchanger = nil }, "exchanger"},
		{"no events", func(_ *Config, d *Deps) { d.Events = nil }, "audit"},
		{"cert without key", func(c *Config, _ *Deps) { c.CertFile = "x.pem" }, "go together"},
		{"missing cert", func(c *Config, _ *Deps) { c.CertFile, c.KeyFile = "/nonexistent.pem", "/nonexistent.key" }, "listener certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, deps := full()
			tc.mod(&cfg, &deps)
			if _, err := New(cfg, deps); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	// Start serves the SVID when no certificate file is set, and stops
	// with its context.
	cfg, deps := full()
	ctx, cancel := context.WithCancel(context.Background())
	g, addr, err := Start(ctx, cfg, deps, "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the test inspects the certificate served
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testGatewayID {
		t.Errorf("served %v", leaf.URIs)
	}
	if _, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil { //nolint:gosec // TLS 1.1 must be refused
		t.Error("TLS 1.1 accepted")
	}
	cancel()
	<-g.Done()
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
}

// authnFake refuses every request.
type authnFake struct{}

func (*authnFake) VerifyRequest(*http.Request) (*authn.Principal, error) {
	return nil, &authn.Error{Reason: authn.ReasonMissingToken}
}

// BenchmarkGatewayAllowedPayment measures one allowed POST through the whole
// pipeline: TLS, JWT verification (cached), rate limits, scopes, Cedar,
// OpenAPI validation, the CRS WAF, a cached token exchange and the mTLS hop
// to the payments agent.
func BenchmarkGatewayAllowedPayment(b *testing.B) {
	routes := strings.Replace(testRoutesYAML, "per_user: {rate: 0.01, burst: 5}", "per_user: {rate: 1000000, burst: 1000000}", 1)
	routes = strings.Replace(routes, "per_client: {rate: 1000, burst: 1000}", "per_client: {rate: 1000000, burst: 1000000}", 1)
	routes = strings.Replace(routes, "per_ip: {rate: 1000, burst: 1000}", "per_ip: {rate: 1000000, burst: 1000000}", 1)
	routes = strings.Replace(routes, "audit_allowed: true", "audit_allowed: false", 1)
	e := newEnvRoutes(b, routes)
	hdr := bearer(e.iss.token(map[string]any{"sub": "usr_bench"}))
	b.ResetTimer()
	for b.Loop() {
		if status, _, body := e.do(b, http.MethodPost, "/v1/payments", `{"amount":100,"to":"GB33"}`, hdr); status != http.StatusOK {
			b.Fatalf("status %d: %s", status, body)
		}
	}
}
