package gateway

import (
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit/redistest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// replicaRoutesYAML routes GET /v1/accounts to payments without WAF or
// OpenAPI, so that the rate limits are what the load meets; %s is the
// rate_limits block.
const replicaRoutesYAML = `
rate_limits:
  per_ip: {rate: 100000, burst: 100000}
%s
routes:
  - name: accounts-read
    methods: [GET]
    path: /v1/accounts
    service: payments
    upstream_path: /v1/payments
    waf: "off"
`

// edgeParts is everything a gateway under test is built from except its
// limiters and audit sink, so that several replicas can share one issuer,
// one policy and one upstream.
type edgeParts struct {
	routes            *Routes
	certFile, keyFile string
	roots             *x509.CertPool
	verifier          Verifier
	decider           mesh.Decider
	resolver          mesh.Resolver
	source            mesh.SVIDSource
	exchanger         TokenExchanger
}

// replica is one running gateway of a test.
type replica struct {
	gw     *Gateway
	url    string
	client *http.Client
	events *recorder
}

// writeRoutes writes routesYAML (and the test OpenAPI document) into a new
// directory and loads it.
func writeRoutes(t testing.TB, routesYAML string) (*Routes, string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"routes.yaml": routesYAML, "openapi.yaml": testOpenAPI} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	routes, err := LoadRoutes(filepath.Join(dir, "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return routes, dir
}

// issuerEdge builds the parts of a gateway in front of a payments agent
// (a real mesh Inbound) with the test issuer iss.
func issuerEdge(t testing.TB, iss *testIssuer, routesYAML string) (edgeParts, *echo) {
	t.Helper()
	routes, dir := writeRoutes(t, routesYAML)
	ca := mtlstest.NewCA(t, testTD)
	svc := &echo{}
	payments := startInbound(t, ca, testPaymentsID, svc, iss.verifier(t, testPaymentsID, nil))
	decider, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"gateway.cedar": testPolicies}})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExchanger(ExchangerConfig{TokenURL: iss.url + "/token", ClientID: testExchangeCID, Key: iss.clientKey, HTTPClient: iss.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, roots := writeServingCert(t, dir)
	return edgeParts{
		routes: routes, certFile: certFile, keyFile: keyFile, roots: roots,
		verifier:  iss.verifier(t, testAudience, nil),
		decider:   decider,
		resolver:  staticResolver{"payments": {spiffeid.RequireFromString(testPaymentsID), []string{payments}}},
		source:    staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()},
		exchanger: ex,
	}, svc
}

// start runs one gateway replica of p with limiters on 127.0.0.1:0 until
// the test ends.
func (p edgeParts) start(t testing.TB, limiters Limiters) *replica {
	t.Helper()
	events := &recorder{}
	g, err := New(Config{Routes: p.routes, CertFile: p.certFile, KeyFile: p.keyFile}, Deps{
		Verifier: p.verifier, Decider: p.decider, Resolver: p.resolver, Source: p.source,
		Exchanger: p.exchanger, Events: events, Limiters: limiters, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	url, client := serveGateway(t, g, p.roots)
	if tr, ok := client.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = 16
	}
	return &replica{gw: g, url: url, client: client, events: events}
}

// get sends GET path with a bearer token and request id rid and returns the
// status and Retry-After.
func (r *replica) get(t testing.TB, path, token, rid string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Request-ID", rid)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// warm opens workers TLS connections to each replica with requests that
// carry no token: they are refused (401) before the client and user limits,
// so the handshakes are out of the measured window and the buckets are
// untouched.
func warm(t *testing.T, replicas []*replica, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	for ri, r := range replicas {
		for w := range workers {
			wg.Go(func() {
				req, err := http.NewRequest(http.MethodGet, r.url+"/v1/accounts", nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("X-Request-ID", fmt.Sprintf("warm-%d-%d", ri, w))
				resp, err := r.client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("warm-up request without a token: status %d", resp.StatusCode)
				}
			})
		}
	}
	wg.Wait()
}

// sharedLimiters returns the client and user limiters of routes shared
// through c under prefix, for one of two replicas; degraded counts the
// limiters' switches to local decisions.
func sharedLimiters(t testing.TB, routes *Routes, c redis.Scripter, prefix string, degraded *atomic.Int64) Limiters {
	t.Helper()
	var out Limiters
	for _, l := range []struct {
		name  string
		limit ratelimit.Limit
		dst   *ratelimit.Limiter
	}{{"client", routes.PerClient, &out.Client}, {"user", routes.PerUser, &out.User}} {
		s, err := ratelimit.NewShared(ratelimit.SharedConfig{
			Name: l.name, Prefix: prefix, Limit: l.limit, Replicas: 2, Timeout: 5 * time.Second,
			OnDegraded: func(d bool, _ error) {
				if d {
					degraded.Add(1)
				}
			},
		}, c)
		if err != nil {
			t.Fatal(err)
		}
		*l.dst = s
	}
	return out
}

// loadResult counts the answers of a load run.
type loadResult struct {
	allowed, limited int
	// span is the time from the first request sent to the last one sent:
	// the window of the limit decisions, which the gateway makes early.
	span time.Duration
	// elapsed is the time from the start to the last answer, which bounds
	// the decisions' window from above.
	elapsed time.Duration
}

// load sends n GET requests with token spread evenly over window (request i
// no earlier than i*window/n after the start), alternating between replicas
// (request i goes to replicas[i%len]), from workers concurrent clients. Every
// answer must be 200 or 429; every 429 must carry Retry-After and have
// exactly one "rate limited" audit event naming limit, on the replica that
// refused it.
func load(t *testing.T, replicas []*replica, token, ridPrefix, limit string, n, workers int, window time.Duration) loadResult {
	t.Helper()
	type answer struct {
		status     int
		retryAfter string
		sent       time.Time
	}
	warm(t, replicas, workers)
	answers := make([]answer, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				// Pacing, not synchronisation: the offered load is n/window.
				time.Sleep(time.Until(start.Add(window * time.Duration(i) / time.Duration(n))))
				sent := time.Now()
				status, ra := replicas[i%len(replicas)].get(t, "/v1/accounts", token, fmt.Sprintf("%s-%d", ridPrefix, i))
				answers[i] = answer{status, ra, sent}
			}
		})
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start)}
	first, last := answers[0].sent, answers[0].sent
	for i, a := range answers {
		if a.sent.Before(first) {
			first = a.sent
		}
		if a.sent.After(last) {
			last = a.sent
		}
		rid := fmt.Sprintf("%s-%d", ridPrefix, i)
		switch a.status {
		case http.StatusOK:
			res.allowed++
		case http.StatusTooManyRequests:
			res.limited++
			if a.retryAfter == "" {
				t.Errorf("%s: 429 without Retry-After", rid)
			}
			evs := replicas[i%len(replicas)].events.find(rid)
			if len(evs) != 1 || evs[0].StatusDetail != DetailRateLimited || evs[0].ClassUID != classAPIActivity || evs[0].Unmapped["rate_limit"] != limit {
				t.Errorf("%s: events %+v, want one %q event for the %s limit", rid, evs, DetailRateLimited, limit)
			}
		default:
			t.Errorf("%s: status %d", rid, a.status)
		}
	}
	res.span = last.Sub(first)
	return res
}

// Issue 6, done when 4: two gateway replicas sharing Redis enforce one
// combined limit, within 10% of what one limiter of that rate and burst
// allows over the same time, whether the user or the client limit binds.
func TestGatewayReplicasShareOneLimit(t *testing.T) {
	t.Parallel()
	rdb1, rdb2 := redistest.New(t), redistest.New(t)
	for _, tc := range []struct {
		name   string
		limits string
		sub    string // the token's subject; the client ID means no user
		limit  string
	}{
		{"per user", "  per_client: {rate: 100000, burst: 100000}\n  per_user: {rate: 50, burst: 50}", "usr_replicas", "user"},
		{"per client", "  per_client: {rate: 50, burst: 50}\n  per_user: {rate: 100000, burst: 100000}", "bank-app", "client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			iss := newTestIssuer(t)
			parts, svc := issuerEdge(t, iss, fmt.Sprintf(replicaRoutesYAML, tc.limits))
			prefix := redistest.Prefix(t, rdb1)
			var degraded atomic.Int64
			replicas := []*replica{
				parts.start(t, sharedLimiters(t, parts.routes, rdb1, prefix, &degraded)),
				parts.start(t, sharedLimiters(t, parts.routes, rdb2, prefix, &degraded)),
			}
			limit := parts.routes.PerUser
			if tc.limit == "client" {
				limit = parts.routes.PerClient
			}
			token := iss.token(map[string]any{"sub": tc.sub})

			// 200 requests/s offered for 2s against a limit of 50/s; the
			// burst of 1s absorbs a scheduling stall on a busy machine.
			const requests, workers, window = 400, 16, 2 * time.Second
			res := load(t, replicas, token, "replicas-"+tc.limit, tc.limit, requests, workers, window)
			want := float64(limit.Burst) + limit.Rate*res.span.Seconds()
			t.Logf("allowed %d, limited %d of %d sent over %v (answered in %v); one limiter allows %.1f",
				res.allowed, res.limited, requests, res.span, res.elapsed, want)
			if res.limited == 0 {
				t.Fatal("nothing limited: the load did not reach the limit")
			}
			if got := float64(res.allowed); got > want*1.1 || got < want*0.9 {
				t.Fatalf("allowed %d across both replicas, want %.1f within 10%%", res.allowed, want)
			}
			if int(svc.hits.Load()) != res.allowed {
				t.Errorf("the service saw %d requests, %d were allowed", svc.hits.Load(), res.allowed)
			}
			for i, r := range replicas {
				limited := 0
				for _, ev := range r.events.all() {
					if ev.StatusDetail == DetailRateLimited {
						limited++
					}
				}
				if limited == 0 {
					t.Errorf("replica %d limited nothing: the load was not shared", i+1)
				}
			}
			if degraded.Load() != 0 {
				t.Fatal("a limiter degraded with Redis up")
			}
		})
	}
}

// closedRedisAddr returns a loopback address nothing listens on.
func closedRedisAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// A replica that loses Redis falls back to its share of the limit (half,
// with two replicas): never unlimited, each refusal still a 429 with
// Retry-After and audited, while the other replica keeps the shared limit.
func TestGatewayReplicaWithoutRedisEnforcesItsShare(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	down := redis.NewClient(&redis.Options{Addr: closedRedisAddr(t), ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = down.Close() })
	iss := newTestIssuer(t)
	parts, _ := issuerEdge(t, iss, fmt.Sprintf(replicaRoutesYAML, "  per_client: {rate: 100000, burst: 100000}\n  per_user: {rate: 50, burst: 50}"))
	prefix := redistest.Prefix(t, rdb)
	var degradedDown, degradedUp atomic.Int64
	cut := parts.start(t, sharedLimiters(t, parts.routes, down, prefix, &degradedDown))
	up := parts.start(t, sharedLimiters(t, parts.routes, rdb, prefix, &degradedUp))
	token := iss.token(map[string]any{"sub": "usr_partition"})
	limit := parts.routes.PerUser
	share := ratelimit.Limit{Rate: limit.Rate / 2, Burst: max(1, limit.Burst/2)}

	for _, tc := range []struct {
		name     string
		rid      string
		replicas []*replica
		limit    ratelimit.Limit
	}{
		{"replica without Redis: its share", "cut", []*replica{cut}, share},
		{"replica with Redis: the shared limit", "up", []*replica{up}, limit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 150 requests/s offered for 1s against a limit of 50/s.
			const requests, workers, window = 150, 8, time.Second
			res := load(t, tc.replicas, token, "partition-"+tc.rid, "user", requests, workers, window)
			bound := float64(tc.limit.Burst) + math.Ceil(tc.limit.Rate*res.elapsed.Seconds())
			t.Logf("allowed %d, limited %d of %d in %v; bound %.0f", res.allowed, res.limited, requests, res.elapsed, bound)
			if float64(res.allowed) > bound {
				t.Fatalf("allowed %d, more than %.0f (burst %d + rate %v over %v)", res.allowed, bound, tc.limit.Burst, tc.limit.Rate, res.elapsed)
			}
			if res.allowed < tc.limit.Burst {
				t.Fatalf("allowed %d, less than the burst %d: the limit failed closed past its share", res.allowed, tc.limit.Burst)
			}
			if res.limited == 0 {
				t.Fatal("nothing limited: unlimited")
			}
		})
	}
	if degradedDown.Load() == 0 {
		t.Error("the replica without Redis did not report degrading")
	}
	if degradedUp.Load() != 0 {
		t.Error("the replica with Redis degraded")
	}
}
