package upstream

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sony/gobreaker/v2"

	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// fastBound is how quickly a request must be refused once the breaker is
// open. Generous for a loaded machine under -race; the hit count, not the
// latency, is what proves no request reached the upstream.
const fastBound = 50 * time.Millisecond

func TestBreakerOpensAndFailsFast(t *testing.T) {
	be := newBackend(t, http.StatusInternalServerError)
	var tr transitions
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	clock := &clocktest.Clock{}
	p := newPool(t, Config{
		Endpoints: []string{be.addr()}, MaxRetries: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Hour},
	}, Deps{OnTrip: tr.record, Metrics: m, Now: clock.Now})
	url, c := gateway(t, p)

	for i := 0; i < 3; i++ {
		r := do(t, c, http.MethodGet, url+"/accounts", "")
		if r.status != http.StatusInternalServerError || errorCode(t, r.body) != CodeUpstreamError {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if strings.Contains(r.body, "hunter2") || strings.Contains(r.body, "10.0.0.7") {
			t.Fatalf("upstream internals leaked: %s", r.body)
		}
	}
	if got := be.hits.Load(); got != 3 {
		t.Fatalf("hits = %d, want 3", got)
	}
	if st, _ := p.State(be.addr()); st != gobreaker.StateOpen {
		t.Fatalf("state = %v, want open", st)
	}

	clock.Advance(30 * time.Minute) // Retry-After follows the injected clock
	var times []time.Duration
	for i := 0; i < 20; i++ {
		r := do(t, c, http.MethodGet, url+"/accounts", "")
		if r.status != http.StatusServiceUnavailable || errorCode(t, r.body) != httpapi.CodeUnavailable {
			t.Fatalf("open breaker: %d %s", r.status, r.body)
		}
		if r.retryAfter != "1800" {
			t.Fatalf("Retry-After = %q, want 1800", r.retryAfter)
		}
		if strings.Contains(r.body, be.addr()) {
			t.Fatalf("endpoint address leaked: %s", r.body)
		}
		if r.elapsed > 5*time.Second {
			t.Fatalf("open breaker answered in %v", r.elapsed)
		}
		times = append(times, r.elapsed)
	}
	slices.Sort(times)
	if med := times[len(times)/2]; med > fastBound {
		t.Errorf("median 503 latency %v over %v", med, fastBound)
	}
	if got := be.hits.Load(); got != 3 {
		t.Fatalf("open breaker let requests through: hits = %d, want 3", got)
	}
	want := []string{"orders/" + be.addr() + " closed->open"}
	if got := tr.list(); !slices.Equal(got, want) {
		t.Fatalf("OnTrip = %v, want %v", got, want)
	}
	if v := testutil.ToFloat64(m.trips.WithLabelValues("orders", be.addr())); v != 1 {
		t.Errorf("trips = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.state.WithLabelValues("orders", be.addr())); v != 2 {
		t.Errorf("state gauge = %v, want 2 (open)", v)
	}
}

func TestHalfOpenProbe(t *testing.T) {
	for _, tc := range []struct {
		name       string
		probe      int
		wantStatus int
		wantState  gobreaker.State
		wantTrip   string
	}{
		{"probe succeeds, breaker closes", http.StatusOK, http.StatusOK, gobreaker.StateClosed, "half-open->closed"},
		{"probe fails, breaker reopens", http.StatusBadGateway, http.StatusBadGateway, gobreaker.StateOpen, "half-open->open"},
		{"4xx probe is a success", http.StatusNotFound, http.StatusNotFound, gobreaker.StateClosed, "half-open->closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, http.StatusServiceUnavailable)
			var tr transitions
			p := newPool(t, Config{
				Endpoints: []string{be.addr()}, MaxRetries: -1,
				Breaker: BreakerConfig{ConsecutiveFailures: 2, OpenFor: 200 * time.Millisecond},
			}, Deps{OnTrip: tr.record})
			url, c := gateway(t, p)
			do(t, c, http.MethodGet, url+"/x", "")
			do(t, c, http.MethodGet, url+"/x", "")
			if st, _ := p.State(be.addr()); st != gobreaker.StateOpen {
				t.Fatalf("state = %v, want open", st)
			}
			be.status.Store(int64(tc.probe))
			// gobreaker reads time.Now: wait (generously) for half-open.
			waitFor(t, "half-open", func() bool {
				st, _ := p.State(be.addr())
				return st == gobreaker.StateHalfOpen
			})
			r := do(t, c, http.MethodGet, url+"/x", "")
			if r.status != tc.wantStatus {
				t.Fatalf("probe status = %d, want %d", r.status, tc.wantStatus)
			}
			if got := be.hits.Load(); got != 3 {
				t.Fatalf("hits = %d, want 3", got)
			}
			if st, _ := p.State(be.addr()); st != tc.wantState {
				t.Fatalf("state after probe = %v, want %v", st, tc.wantState)
			}
			got := tr.list()
			if len(got) != 3 || !strings.HasSuffix(got[1], "open->half-open") || !strings.HasSuffix(got[2], tc.wantTrip) {
				t.Fatalf("OnTrip = %v", got)
			}
		})
	}
}

func TestRetriesOnlyIdempotentAndOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		method   string
		body     string
		replay   bool // request built with a replayable body (GetBody)
		wantHits int64
	}{
		{"GET retried once", http.MethodGet, "", false, 2},
		{"HEAD retried once", http.MethodHead, "", false, 2},
		{"DELETE retried once", http.MethodDelete, "", false, 2},
		{"PUT replayable retried once", http.MethodPut, `{"a":1}`, true, 2},
		{"PUT streamed body not retried", http.MethodPut, `{"a":1}`, false, 1},
		{"POST never retried", http.MethodPost, `{"a":1}`, true, 1},
		{"POST without body never retried", http.MethodPost, "", false, 1},
		{"PATCH never retried", http.MethodPatch, `{"a":1}`, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, http.StatusInternalServerError)
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			p := newPool(t, Config{Endpoints: []string{be.addr()}, Breaker: BreakerConfig{ConsecutiveFailures: 100}},
				Deps{Metrics: m})
			c := &http.Client{Transport: p, Timeout: 30 * time.Second}
			var body io.Reader
			if tc.body != "" {
				if tc.replay {
					body = bytes.NewReader([]byte(tc.body))
				} else {
					body = io.NopCloser(strings.NewReader(tc.body)) // not replayable
				}
			}
			req, err := http.NewRequest(tc.method, "http://orders/accounts", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if got := be.hits.Load(); got != tc.wantHits {
				t.Fatalf("hits = %d, want %d", got, tc.wantHits)
			}
			for i, b := range be.gotBodies() {
				if b != tc.body {
					t.Errorf("attempt %d body = %q, want %q", i, b, tc.body)
				}
			}
			if v := testutil.ToFloat64(m.retries.WithLabelValues("orders")); v != float64(tc.wantHits-1) {
				t.Errorf("retries counter = %v, want %d", v, tc.wantHits-1)
			}
		})
	}
}

func TestRetryUntouchedStreamedBody(t *testing.T) {
	// A PUT whose body was never read (connection refused) may go to the
	// next endpoint even though it is not replayable.
	be := newBackend(t, http.StatusOK)
	dead := deadAddr(t)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, Config{Endpoints: []string{dead, be.addr()}, Breaker: BreakerConfig{ConsecutiveFailures: 100}},
		Deps{Metrics: m})
	c := &http.Client{Transport: p, Timeout: 30 * time.Second}
	for i := 0; i < 4; i++ {
		req, err := http.NewRequest(http.MethodPut, "http://orders/x", io.NopCloser(strings.NewReader("payload")))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	for _, b := range be.gotBodies() {
		if b != "payload" {
			t.Fatalf("body = %q", b)
		}
	}
	// Round-robin sends some requests to the dead endpoint first.
	if v := testutil.ToFloat64(m.retries.WithLabelValues("orders")); v < 1 || v > 4 {
		t.Fatalf("retries = %v, want 1-4", v)
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		method   string
		wantHits int64
	}{
		{"GET times out, retried once", http.MethodGet, 2},
		{"POST times out, not retried", http.MethodPost, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, 0) // hangs
			p := newPool(t, Config{Endpoints: []string{be.addr()}, Timeout: 100 * time.Millisecond}, Deps{})
			url, c := gateway(t, p)
			r := do(t, c, tc.method, url+"/slow", "")
			if r.status != http.StatusGatewayTimeout || errorCode(t, r.body) != CodeUpstreamTimeout {
				t.Fatalf("got %d %s, want 504 upstream_timeout", r.status, r.body)
			}
			if r.elapsed > 5*time.Second {
				t.Fatalf("timeout took %v", r.elapsed)
			}
			if got := be.hits.Load(); got != tc.wantHits {
				t.Fatalf("hits = %d, want %d", got, tc.wantHits)
			}
		})
	}
}

func TestTimeoutsTripBreaker(t *testing.T) {
	be := newBackend(t, 0)
	p := newPool(t, Config{Endpoints: []string{be.addr()}, Timeout: 50 * time.Millisecond, MaxRetries: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}}, Deps{})
	url, c := gateway(t, p)
	do(t, c, http.MethodGet, url+"/", "")
	do(t, c, http.MethodGet, url+"/", "")
	r := do(t, c, http.MethodGet, url+"/", "")
	if r.status != http.StatusServiceUnavailable || be.hits.Load() != 2 {
		t.Fatalf("after two timeouts: %d, hits %d; want 503, 2", r.status, be.hits.Load())
	}
}

func TestQuarantinedSkipped(t *testing.T) {
	a, b := newBackend(t, http.StatusOK), newBackend(t, http.StatusOK)
	quarantined := map[string]bool{a.addr(): true}
	p := newPool(t, Config{Endpoints: []string{a.addr(), b.addr()}}, Deps{
		Quarantined: func(ep string) bool { return quarantined[ep] },
	})
	url, c := gateway(t, p)
	for i := 0; i < 10; i++ {
		if r := do(t, c, http.MethodGet, url+"/", ""); r.status != http.StatusOK {
			t.Fatalf("status %d", r.status)
		}
	}
	if a.hits.Load() != 0 || b.hits.Load() != 10 {
		t.Fatalf("hits quarantined=%d healthy=%d, want 0 and 10", a.hits.Load(), b.hits.Load())
	}

	// Everything quarantined: refused at once, nothing reached.
	all := newPool(t, Config{Endpoints: []string{a.addr(), b.addr()}}, Deps{Quarantined: func(string) bool { return true }})
	url2, c2 := gateway(t, all)
	r := do(t, c2, http.MethodGet, url2+"/", "")
	if r.status != http.StatusServiceUnavailable || r.retryAfter == "" {
		t.Fatalf("all quarantined: %d Retry-After %q", r.status, r.retryAfter)
	}
	if a.hits.Load() != 0 || b.hits.Load() != 10 {
		t.Fatal("a quarantined endpoint was reached")
	}
}

func TestOneDeadEndpoint(t *testing.T) {
	good := newBackend(t, http.StatusOK)
	bad := newBackend(t, http.StatusInternalServerError)
	dead := deadAddr(t)
	var tr transitions
	p := newPool(t, Config{
		Endpoints: []string{dead, bad.addr(), good.addr()},
		Breaker:   BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour},
	}, Deps{OnTrip: tr.record})
	url, c := gateway(t, p)
	for i := 0; i < 12; i++ {
		do(t, c, http.MethodGet, url+"/", "") // may still see a failure before both breakers open
	}
	badHits := bad.hits.Load()
	goodBefore := good.hits.Load()
	for i := 0; i < 30; i++ {
		if r := do(t, c, http.MethodGet, url+"/", ""); r.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	if good.hits.Load()-goodBefore != 30 || bad.hits.Load() != badHits {
		t.Fatalf("traffic went to a failing endpoint: good +%d, bad +%d", good.hits.Load()-goodBefore, bad.hits.Load()-badHits)
	}
	for _, ep := range []string{dead, bad.addr()} {
		if st, _ := p.State(ep); st != gobreaker.StateOpen {
			t.Errorf("%s: state %v, want open", ep, st)
		}
	}
	got := tr.list()
	sort.Strings(got)
	want := []string{"orders/" + dead + " closed->open", "orders/" + bad.addr() + " closed->open"}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("OnTrip = %v, want %v", got, want)
	}
}

func TestConnectionRefusedIs502WithoutDetail(t *testing.T) {
	dead := deadAddr(t)
	p := newPool(t, Config{Endpoints: []string{dead}, MaxRetries: -1}, Deps{})
	url, c := gateway(t, p)
	r := do(t, c, http.MethodPost, url+"/", `{}`)
	if r.status != http.StatusBadGateway || errorCode(t, r.body) != CodeBadGateway {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if strings.Contains(r.body, dead) || strings.Contains(r.body, "refused") {
		t.Fatalf("internal detail leaked: %s", r.body)
	}
}

func TestBodyLimit(t *testing.T) {
	be := newBackend(t, http.StatusOK)
	p := newPool(t, Config{Endpoints: []string{be.addr()}, MaxBodyBytes: 16,
		Breaker: BreakerConfig{ConsecutiveFailures: 1}}, Deps{})
	url, c := gateway(t, p)

	// Declared length over the limit: refused before the upstream.
	r := do(t, c, http.MethodPut, url+"/", strings.Repeat("x", 17))
	if r.status != http.StatusRequestEntityTooLarge || errorCode(t, r.body) != httpapi.CodeTooLarge {
		t.Fatalf("declared: %d %s", r.status, r.body)
	}
	if be.hits.Load() != 0 {
		t.Fatal("oversized body reached the upstream")
	}
	// Chunked body over the limit: 413, and the client's fault does not
	// trip the upstream's breaker.
	req, _ := http.NewRequest(http.MethodPut, url+"/", io.MultiReader(strings.NewReader(strings.Repeat("y", 64))))
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	t.Logf("chunked oversized body: %d", resp.StatusCode)
	if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked: %d", resp.StatusCode) // 200 only if the upstream answered before reading
	}
	if st, _ := p.State(be.addr()); st != gobreaker.StateClosed {
		t.Fatalf("oversized client body tripped the breaker: %v", st)
	}
	if r := do(t, c, http.MethodPut, url+"/", "small"); r.status != http.StatusOK {
		t.Fatalf("small body: %d", r.status)
	}
}

func TestHopByHopAndSpoofedHeadersStripped(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := newBackend(t, http.StatusOK)
	srv.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
	})
	p := newPool(t, Config{Endpoints: []string{srv.addr()}}, Deps{})
	url, c := gateway(t, p)
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "smuggled")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	h := <-got
	for _, k := range []string{"X-Secret", "X-Forwarded-For", "Proxy-Authorization"} {
		if v := h.Get(k); v != "" {
			t.Errorf("%s reached the upstream: %q", k, v)
		}
	}
}

func TestClientCancelDoesNotTrip(t *testing.T) {
	be := newBackend(t, 0)
	p := newPool(t, Config{Endpoints: []string{be.addr()}, Timeout: time.Minute, MaxRetries: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 1}}, Deps{})
	url, _ := gateway(t, p)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	for i := 0; i < 3; i++ {
		if resp, err := c.Get(url + "/"); err == nil {
			_ = resp.Body.Close()
			t.Fatal("expected client timeout")
		}
	}
	waitFor(t, "three hits", func() bool { return be.hits.Load() == 3 })
	time.Sleep(50 * time.Millisecond) // let the proxy see the cancellations
	if st, _ := p.State(be.addr()); st != gobreaker.StateClosed {
		t.Fatalf("client cancellations tripped the breaker: %v", st)
	}
}

func TestNewValidates(t *testing.T) {
	ok := Config{Name: "orders", Endpoints: []string{"127.0.0.1:8080"}}
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"empty name", func(c *Config) { c.Name = "" }},
		{"bad name", func(c *Config) { c.Name = "a b" }},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }},
		{"url endpoint", func(c *Config) { c.Endpoints = []string{"http://x:80"} }},
		{"userinfo", func(c *Config) { c.Endpoints = []string{"u@x:80"} }},
		{"no port", func(c *Config) { c.Endpoints = []string{"x"} }},
		{"port 0", func(c *Config) { c.Endpoints = []string{"x:0"} }},
		{"port big", func(c *Config) { c.Endpoints = []string{"x:65536"} }},
		{"duplicate", func(c *Config) { c.Endpoints = []string{"x:1", "x:1"} }},
		{"scheme", func(c *Config) { c.Scheme = "ftp" }},
		{"timeout", func(c *Config) { c.Timeout = -1 }},
		{"retries", func(c *Config) { c.MaxRetries = 10 }},
		{"failures", func(c *Config) { c.Breaker.ConsecutiveFailures = -1 }},
		{"open for", func(c *Config) { c.Breaker.OpenFor = -time.Second }},
		{"half open", func(c *Config) { c.Breaker.HalfOpenRequests = -1 }},
		{"body", func(c *Config) { c.MaxBodyBytes = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			cfg.Endpoints = slices.Clone(ok.Endpoints)
			tc.mut(&cfg)
			if _, err := New(cfg, Deps{}); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	p, err := New(ok, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Timeout != DefaultTimeout || p.cfg.MaxRetries != DefaultMaxRetries ||
		p.cfg.Breaker.ConsecutiveFailures != DefaultConsecutiveFailures || p.cfg.Breaker.OpenFor != DefaultOpenFor ||
		p.cfg.Breaker.HalfOpenRequests != DefaultHalfOpenRequests || p.cfg.MaxBodyBytes != DefaultMaxBodyBytes ||
		p.cfg.Scheme != "http" {
		t.Fatalf("defaults not applied: %+v", p.cfg)
	}
}

func FuzzCheckEndpoint(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "x:0", "a@b:1", "h:65535", "h:0080", ":1", "h/x:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkEndpoint(s) != nil {
			return
		}
		// An accepted endpoint must be exactly a URL host.
		req, err := http.NewRequest(http.MethodGet, "http://"+s+"/", nil)
		if err != nil {
			t.Fatalf("accepted %q but it is not a URL host: %v", s, err)
		}
		if req.URL.Host != s || req.URL.User != nil || req.URL.Path != "/" {
			t.Fatalf("accepted %q parses as host %q path %q", s, req.URL.Host, req.URL.Path)
		}
	})
}

// TestDegradedModeKeepsAuth composes the pool behind an authentication
// check, as the gateway does: an open breaker turns allowed requests into
// fast 503s, and unauthenticated requests are still refused with 401.
func TestDegradedModeKeepsAuth(t *testing.T) {
	be := newBackend(t, http.StatusInternalServerError)
	p := newPool(t, Config{Endpoints: []string{be.addr()}, MaxRetries: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Hour}}, Deps{})
	proxy := p.Handler(nil)
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			httpapi.WriteError(w, r, nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "no valid token"))
			return
		}
		proxy.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(auth)
	t.Cleanup(srv.Close)
	c := &http.Client{Timeout: 30 * time.Second}
	call := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if got := call("good"); got != http.StatusInternalServerError { // trips the breaker
		t.Fatalf("first call: %d", got)
	}
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"forged", http.StatusUnauthorized}, {"good", http.StatusServiceUnavailable}} {
		if got := call(tc.token); got != tc.want {
			t.Errorf("token %q with breaker open: %d, want %d", tc.token, got, tc.want)
		}
	}
	if be.hits.Load() != 1 {
		t.Fatalf("hits = %d, want 1", be.hits.Load())
	}
}

func TestHalfOpenAdmitsOneProbe(t *testing.T) {
	release := make(chan struct{})
	var failing atomic.Bool
	failing.Store(true)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		<-release // the probe is held until the second request was refused
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(up.Close)
	addr := up.Listener.Addr().String()
	p := newPool(t, Config{Endpoints: []string{addr}, MaxRetries: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 1, OpenFor: 200 * time.Millisecond}}, Deps{})
	url, c := gateway(t, p)
	do(t, c, http.MethodGet, url+"/", "")
	failing.Store(false)
	waitFor(t, "half-open", func() bool { st, _ := p.State(addr); return st == gobreaker.StateHalfOpen })

	probe := make(chan int, 1)
	go func() { // no t.Fatal off the test goroutine
		resp, err := c.Get(url + "/")
		if err != nil {
			probe <- -1
			return
		}
		_ = resp.Body.Close()
		probe <- resp.StatusCode
	}()
	waitFor(t, "probe at upstream", func() bool { return hits.Load() == 2 })
	if r := do(t, c, http.MethodGet, url+"/", ""); r.status != http.StatusServiceUnavailable || r.retryAfter != "1" {
		t.Errorf("second request while probing: %d Retry-After %q, want 503 and 1", r.status, r.retryAfter)
	}
	close(release)
	if st := <-probe; st != http.StatusOK {
		t.Fatalf("probe: %d", st)
	}
	if hits.Load() != 2 {
		t.Fatalf("hits = %d, want 2", hits.Load())
	}
	if st, _ := p.State(addr); st != gobreaker.StateClosed {
		t.Fatalf("state = %v, want closed", st)
	}
}
