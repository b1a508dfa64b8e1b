package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimitValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		limit Limit
		ok    bool
	}{
		{"ok", Limit{Rate: 10, Burst: 5}, true},
		{"slow", Limit{Rate: 0.001, Burst: 1}, true},
		{"max", Limit{Rate: MaxRate, Burst: MaxBurst}, true},
		{"max burst refilled in a second", Limit{Rate: MaxBurst, Burst: MaxBurst}, true},
		{"zero rate", Limit{Rate: 0, Burst: 5}, false},
		{"negative rate", Limit{Rate: -1, Burst: 5}, false},
		{"NaN rate", Limit{Rate: math.NaN(), Burst: 5}, false},
		{"infinite rate", Limit{Rate: math.Inf(1), Burst: 5}, false},
		{"rate too high", Limit{Rate: MaxRate * 2, Burst: 5}, false},
		{"zero burst", Limit{Rate: 1, Burst: 0}, false},
		{"negative burst", Limit{Rate: 1, Burst: -3}, false},
		{"burst too high", Limit{Rate: 1, Burst: MaxBurst + 1}, false},
		{"one a day", Limit{Rate: 1.0 / 86400, Burst: 1}, true},
		{"refill too slow", Limit{Rate: 1e-9, Burst: 1}, false},
		{"big burst slow refill", Limit{Rate: 1, Burst: MaxBurst}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.limit.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.limit, err, tt.ok)
			}
			_, err := NewLocal(LocalConfig{Limit: tt.limit})
			if (err == nil) != tt.ok {
				t.Fatalf("NewLocal(%+v) = %v, want ok=%v", tt.limit, err, tt.ok)
			}
		})
	}
}

func TestNewLocalMaxKeys(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, maxMaxKeys + 1} {
		if _, err := NewLocal(LocalConfig{Limit: Limit{Rate: 1, Burst: 1}, MaxKeys: n}); err == nil {
			t.Errorf("NewLocal(MaxKeys=%d) succeeded", n)
		}
	}
}

type step struct {
	advance       time.Duration
	wantAllowed   bool
	wantRemaining int
	wantRetry     time.Duration
}

func TestLocalBurstRefillRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		limit Limit
		steps []step
	}{
		{
			name:  "burst then refill",
			limit: Limit{Rate: 2, Burst: 3},
			steps: []step{
				{0, true, 2, 0},
				{0, true, 1, 0},
				{0, true, 0, 0},
				{0, false, 0, 500 * time.Millisecond},
				{250 * time.Millisecond, false, 0, 250 * time.Millisecond},
				{250 * time.Millisecond, true, 0, 0},
				{0, false, 0, 500 * time.Millisecond},
				{10 * time.Second, true, 2, 0}, // refilled to burst, not beyond
				{0, true, 1, 0},
				{0, true, 0, 0},
				{0, false, 0, 500 * time.Millisecond},
			},
		},
		{
			name:  "slow limit retry after",
			limit: Limit{Rate: 0.1, Burst: 1},
			steps: []step{
				{0, true, 0, 0},
				{0, false, 0, 10 * time.Second},
				{4 * time.Second, false, 0, 6 * time.Second},
				{6 * time.Second, true, 0, 0},
			},
		},
		{
			name:  "clock stepping back refills nothing",
			limit: Limit{Rate: 1, Burst: 1},
			steps: []step{
				{0, true, 0, 0},
				{-time.Hour, false, 0, time.Second},
				{time.Hour, false, 0, time.Second},
				{time.Second, true, 0, 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newManualClock()
			l, err := NewLocal(LocalConfig{Name: "test", Limit: tt.limit, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				res, err := l.Allow(context.Background(), "client:a")
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				want := Result{Allowed: s.wantAllowed, Remaining: s.wantRemaining, RetryAfter: s.wantRetry, Limit: tt.limit}
				if res != want {
					t.Fatalf("step %d: got %+v, want %+v", i, res, want)
				}
			}
		})
	}
}

func TestLocalKeysAreIndependent(t *testing.T) {
	t.Parallel()
	l, err := NewLocal(LocalConfig{Limit: Limit{Rate: 1, Burst: 1}, Now: newManualClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{"a", "b"} {
		if res, _ := l.Allow(ctx, key); !res.Allowed {
			t.Fatalf("first request for %q refused", key)
		}
	}
	if res, _ := l.Allow(ctx, "a"); res.Allowed {
		t.Fatal("second request for a allowed")
	}
	if _, err := l.Allow(ctx, ""); !errors.Is(err, ErrEmptyKey) {
		t.Fatalf("empty key: err = %v, want ErrEmptyKey", err)
	}
}

// An attacker who floods new keys must neither grow memory past MaxKeys nor
// reset the bucket of a key that is being limited right now.
func TestLocalEvictionBound(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	const maxKeys = 10
	l, err := NewLocal(LocalConfig{Limit: Limit{Rate: 1, Burst: 2}, MaxKeys: maxKeys, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		_, _ = l.Allow(ctx, "victim")
	}
	for i := range 5000 {
		if _, err := l.Allow(ctx, fmt.Sprintf("flood-%d", i)); err != nil {
			t.Fatal(err)
		}
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys: %d buckets, bound %d", i+1, n, maxKeys)
		}
		if i%(maxKeys/2) == 0 { // the limited client keeps trying
			if res, _ := l.Allow(ctx, "victim"); res.Allowed {
				t.Fatalf("victim allowed after %d flood keys: its bucket was reset", i+1)
			}
		}
	}
	// Long keys are hashed, so they cost bounded memory and still match.
	long := strings.Repeat("x", 100_000)
	if res, _ := l.Allow(ctx, long); !res.Allowed {
		t.Fatal("first long-key request refused")
	}
	if res, _ := l.Allow(ctx, long); !res.Allowed {
		t.Fatal("second long-key request refused")
	}
	if res, _ := l.Allow(ctx, long); res.Allowed {
		t.Fatal("third long-key request allowed")
	}
	// Buckets that have refilled completely are dropped by later requests.
	clock.Advance(time.Minute)
	for i := range 3 {
		_, _ = l.Allow(ctx, fmt.Sprintf("late-%d", i))
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("idle buckets not evicted: %d buckets, want the 3 in use", n)
	}
}

func TestLocalConcurrent(t *testing.T) {
	t.Parallel()
	clock := newManualClock() // frozen: no refill during the test
	const burst = 100
	l, err := NewLocal(LocalConfig{Limit: Limit{Rate: 1, Burst: burst}, MaxKeys: 50, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				res, err := l.Allow(context.Background(), "shared")
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					allowed.Add(1)
				}
				_, _ = l.Allow(context.Background(), fmt.Sprintf("g%d-%d", g, i%100))
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Fatalf("allowed %d concurrent requests, want exactly %d", got, burst)
	}
	if n := l.Len(); n > 50 {
		t.Fatalf("%d buckets, bound 50", n)
	}
}

func BenchmarkLocalAllow(b *testing.B) {
	l, err := NewLocal(LocalConfig{Limit: Limit{Rate: 1e6, Burst: 1000}})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("ip4:10.0.%d.%d", i/256, i%256)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = l.Allow(context.Background(), keys[i%len(keys)])
			i++
		}
	})
}
