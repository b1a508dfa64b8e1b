package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Limiters built apart on one registry report under one family: the second
// NewMetrics reuses what the first registered.
func TestNewMetricsTwiceOnOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	first, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("second NewMetrics on the same registry: %v", err)
	}
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0) // a stopped clock: no refill
	for _, m := range []*Metrics{first, second} {
		l, err := NewLocal(LocalConfig{Name: "ip", Limit: Limit{Rate: 1, Burst: 1}, Metrics: m, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := l.Allow(ctx, "ip4:192.0.2.1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := testutil.ToFloat64(first.limitedTotal.WithLabelValues("ip")); got != 2 {
		t.Fatalf("limited_requests_total{limiter=ip} = %v, want 2 (one refusal from each limiter)", got)
	}
}

// A different collector under the same name is still an error.
func TestNewMetricsRefusesAConflictingCollector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "bulwark", Subsystem: "ratelimit", Name: "limited_requests_total", Help: "something else",
	}))
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("NewMetrics accepted a registry with a conflicting collector")
	}
}
