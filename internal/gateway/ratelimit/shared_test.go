package ratelimit

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit/redistest"
)

func newShared(t testing.TB, cfg SharedConfig, c redis.Scripter) *Shared {
	t.Helper()
	s, err := NewShared(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSharedValidates(t *testing.T) {
	t.Parallel()
	good := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	unbounded := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = good.Close(); _ = unbounded.Close() })
	ok := SharedConfig{Name: "ip", Limit: Limit{Rate: 10, Burst: 10}, Replicas: 2}
	tests := []struct {
		name   string
		mutate func(*SharedConfig)
		client redis.Scripter
		ok     bool
	}{
		{"ok", func(*SharedConfig) {}, good, true},
		{"no name", func(c *SharedConfig) { c.Name = "" }, good, false},
		{"bad name", func(c *SharedConfig) { c.Name = "a b*" }, good, false},
		{"bad limit", func(c *SharedConfig) { c.Limit.Rate = 0 }, good, false},
		{"zero replicas", func(c *SharedConfig) { c.Replicas = 0 }, good, false},
		{"too many replicas", func(c *SharedConfig) { c.Replicas = maxReplicas + 1 }, good, false},
		{"negative timeout", func(c *SharedConfig) { c.Timeout = -time.Second }, good, false},
		{"huge timeout", func(c *SharedConfig) { c.Timeout = time.Hour }, good, false},
		{"negative retry interval", func(c *SharedConfig) { c.RetryInterval = -1 }, good, false},
		{"nil client", func(*SharedConfig) {}, nil, false},
		{"nil typed client", func(*SharedConfig) {}, (*redis.Client)(nil), false},
		{"client ignoring context deadlines", func(*SharedConfig) {}, unbounded, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.mutate(&cfg)
			if _, err := NewShared(cfg, tt.client); (err == nil) != tt.ok {
				t.Fatalf("NewShared = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// Two gateway replicas, each with its own Redis connection pool, hammered
// concurrently, enforce one combined limit.
func TestSharedTwoReplicasOneLimit(t *testing.T) {
	c1, c2 := redistest.New(t), redistest.New(t)
	prefix := redistest.Prefix(t, c1)
	limit := Limit{Rate: 200, Burst: 40}
	var degraded atomic.Int64
	cfg := SharedConfig{
		Name: "client", Prefix: prefix, Limit: limit, Replicas: 2, Timeout: 5 * time.Second,
		OnDegraded: func(bool, error) { degraded.Add(1) },
	}
	replicas := []*Shared{newShared(t, cfg, c1), newShared(t, cfg, c2)}

	const duration = 2 * time.Second
	var allowed, refused [2]atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(duration)
	for i, s := range replicas {
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					res, err := s.Allow(context.Background(), ClientKey("mobile-app"))
					if err != nil {
						t.Error(err)
						return
					}
					if res.Degraded {
						t.Error("decision degraded with Redis up")
						return
					}
					if res.Allowed {
						allowed[i].Add(1)
					} else {
						refused[i].Add(1)
						if res.RetryAfter <= 0 || res.RetryAfter > limit.interval()+time.Millisecond {
							t.Errorf("RetryAfter %v outside (0, %v]", res.RetryAfter, limit.interval())
						}
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	got := allowed[0].Load() + allowed[1].Load()
	want := limit.Rate*elapsed.Seconds() + float64(limit.Burst)
	t.Logf("allowed %d (replica 1: %d, replica 2: %d), refused %d, expected %.0f over %v",
		got, allowed[0].Load(), allowed[1].Load(), refused[0].Load()+refused[1].Load(), want, elapsed)
	if float64(got) > want*1.1 || float64(got) < want*0.9 {
		t.Fatalf("allowed %d, want %.0f within 10%%", got, want)
	}
	if refused[0].Load()+refused[1].Load() == 0 {
		t.Fatal("nothing refused: the load did not reach the limit")
	}
	for i := range replicas {
		if allowed[i].Load() == 0 {
			t.Errorf("replica %d allowed nothing", i+1)
		}
	}
	if degraded.Load() != 0 {
		t.Fatal("limiter reported degradation with Redis up")
	}
}

// Decisions use Redis time: replicas whose clocks are hours apart still
// share one burst, and a refused request's Retry-After is the time to the
// next token; the key expires when the bucket is full again.
func TestSharedSkewedClocksAndRetryAfter(t *testing.T) {
	c := redistest.New(t)
	prefix := redistest.Prefix(t, c)
	limit := Limit{Rate: 1, Burst: 2}
	ahead := func() time.Time { return time.Now().Add(3 * time.Hour) }
	behind := func() time.Time { return time.Now().Add(-3 * time.Hour) }
	a := newShared(t, SharedConfig{Name: "user", Prefix: prefix, Limit: limit, Replicas: 2, Timeout: 5 * time.Second, Now: ahead}, c)
	b := newShared(t, SharedConfig{Name: "user", Prefix: prefix, Limit: limit, Replicas: 2, Timeout: 5 * time.Second, Now: behind}, redistest.New(t))
	ctx := context.Background()
	key := UserKey("alice")

	tests := []struct {
		name          string
		s             *Shared
		wantAllowed   bool
		wantRemaining int
	}{
		{"first on replica a", a, true, 1},
		{"second on replica b", b, true, 0},
		{"third on replica a", a, false, 0},
		{"fourth on replica b", b, false, 0},
	}
	for _, tt := range tests {
		res, err := tt.s.Allow(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if res.Allowed != tt.wantAllowed || res.Remaining != tt.wantRemaining || res.Degraded || res.Limit != limit {
			t.Fatalf("%s: got %+v, want allowed=%v remaining=%d", tt.name, res, tt.wantAllowed, tt.wantRemaining)
		}
		if !res.Allowed && (res.RetryAfter < 500*time.Millisecond || res.RetryAfter > time.Second) {
			t.Fatalf("%s: RetryAfter %v, want just under 1s", tt.name, res.RetryAfter)
		}
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys under prefix: %v, %v; want one", keys, err)
	}
	ttl, err := c.PTTL(ctx, keys[0]).Result()
	if err != nil || ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("TTL %v, %v; want (0, 2s] (time to refill)", ttl, err)
	}
	// A different key has its own limit.
	if res, err := b.Allow(ctx, UserKey("bob")); err != nil || !res.Allowed {
		t.Fatalf("other key: %+v, %v", res, err)
	}
}

// A rate whose interval is not a whole number of microseconds keeps its
// burst and Remaining exact.
func TestSharedFractionalInterval(t *testing.T) {
	c := redistest.New(t)
	limit := Limit{Rate: 3, Burst: 3}
	s := newShared(t, SharedConfig{Name: "frac", Prefix: redistest.Prefix(t, c), Limit: limit, Replicas: 3, Timeout: 5 * time.Second}, c)
	for i, want := range []int{2, 1, 0} {
		res, err := s.Allow(context.Background(), "k")
		if err != nil || !res.Allowed || res.Remaining != want {
			t.Fatalf("request %d: %+v, %v; want allowed with %d remaining", i, res, err, want)
		}
	}
	res, err := s.Allow(context.Background(), "k")
	if err != nil || res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > limit.interval()+time.Microsecond {
		t.Fatalf("fourth request: %+v, %v; want refused within %v", res, err, limit.interval())
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// With Redis down, each replica enforces its share of the limit: never
// unlimited, and the degradation is reported.
func TestSharedRedisDownFallsBackToShare(t *testing.T) {
	t.Parallel()
	down := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	clock := newManualClock()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	type event struct {
		degraded bool
		err      error
	}
	var mu sync.Mutex
	var events []event
	s := newShared(t, SharedConfig{
		Name: "ip", Limit: Limit{Rate: 10, Burst: 10}, Replicas: 2, Now: clock.Now, Metrics: metrics,
		OnDegraded: func(d bool, err error) { mu.Lock(); events = append(events, event{d, err}); mu.Unlock() },
	}, down)
	share := Limit{Rate: 5, Burst: 5}
	ctx := context.Background()

	tests := []struct {
		name        string
		advance     time.Duration
		wantAllowed int
	}{
		{"burst share", 0, 5},
		{"still within retry interval", 100 * time.Millisecond, 0},
		{"one second of share refill, Redis retried", time.Second, 5},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		allowed := 0
		for range 20 {
			res, err := s.Allow(ctx, "ip4:192.0.2.1")
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if !res.Degraded || res.Limit != share {
				t.Fatalf("%s: %+v, want a degraded decision under %+v", tt.name, res, share)
			}
			if res.Allowed {
				allowed++
			} else if res.RetryAfter <= 0 || res.RetryAfter > 200*time.Millisecond {
				t.Fatalf("%s: RetryAfter %v", tt.name, res.RetryAfter)
			}
		}
		if allowed != tt.wantAllowed {
			t.Fatalf("%s: allowed %d of 20, want %d", tt.name, allowed, tt.wantAllowed)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || !events[0].degraded || events[0].err == nil {
		t.Fatalf("degradation events %+v, want one with the Redis error", events)
	}
	if g := testutil.ToFloat64(metrics.degraded.WithLabelValues("ip")); g != 1 {
		t.Fatalf("degraded gauge %v, want 1", g)
	}
	if n := testutil.ToFloat64(metrics.limitedTotal.WithLabelValues("ip")); n != 50 {
		t.Fatalf("limited counter %v, want 50", n)
	}
	if n := testutil.ToFloat64(metrics.degradedTotal.WithLabelValues("ip")); n != 60 {
		t.Fatalf("degraded decisions %v, want 60", n)
	}
}

// flakyProxy forwards TCP to Redis until it is broken, so a test can take
// Redis away and bring it back.
type flakyProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	broken bool
	conns  []net.Conn
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); p.setBroken(true); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.broken {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Go(func() { pipe(c, up) })
			wg.Go(func() { pipe(up, c) })
		}
	})
	return p
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (p *flakyProxy) setBroken(b bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.broken = b
	if b {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// Redis going away mid-flight degrades to the local share; Redis coming
// back restores the shared limit and reports recovery.
func TestSharedDegradesAndRecovers(t *testing.T) {
	direct := redistest.New(t)
	prefix := redistest.Prefix(t, direct)
	proxy := newFlakyProxy(t, redistest.Addr())
	c := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	clock := newManualClock()
	var mu sync.Mutex
	var events []bool
	s := newShared(t, SharedConfig{
		Name: "client", Prefix: prefix, Limit: Limit{Rate: 0.01, Burst: 4}, Replicas: 4,
		Timeout: 5 * time.Second, Now: clock.Now,
		OnDegraded: func(d bool, _ error) { mu.Lock(); events = append(events, d); mu.Unlock() },
	}, c)
	ctx := context.Background()
	key := ClientKey("partner")
	check := func(name string, wantAllowed, wantDegraded bool) {
		t.Helper()
		res, err := s.Allow(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Allowed != wantAllowed || res.Degraded != wantDegraded {
			t.Fatalf("%s: %+v, want allowed=%v degraded=%v", name, res, wantAllowed, wantDegraded)
		}
	}
	check("shared 1", true, false)
	check("shared 2", true, false)
	proxy.setBroken(true)
	check("local share of 1", true, true)
	check("local share exhausted", false, true)
	proxy.setBroken(false)
	check("still local within retry interval", false, true)
	clock.Advance(DefaultRetryInterval)
	check("shared 3", true, false)
	check("shared 4", true, false)
	check("shared exhausted", false, false)
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || !events[0] || events[1] {
		t.Fatalf("events %v, want [true false]", events)
	}
}

func TestSharedCanceledContextIsAnError(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	s := newShared(t, SharedConfig{Name: "ip", Limit: Limit{Rate: 1, Burst: 1}, Replicas: 1}, c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Allow(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := s.Allow(context.Background(), ""); !errors.Is(err, ErrEmptyKey) {
		t.Fatalf("err = %v, want ErrEmptyKey", err)
	}
}

func BenchmarkSharedAllow(b *testing.B) {
	c := redistest.New(b)
	prefix := redistest.Prefix(b, c)
	s := newShared(b, SharedConfig{Name: "bench", Prefix: prefix, Limit: Limit{Rate: 1e6, Burst: 1000}, Replicas: 1}, c)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Allow(context.Background(), "bench-key"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
