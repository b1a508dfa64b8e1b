package ratelimit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the optional Prometheus metrics of the limiters, labelled by
// limiter name. A nil *Metrics records nothing.
type Metrics struct {
	limitedTotal  *prometheus.CounterVec
	degradedTotal *prometheus.CounterVec
	degraded      *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg. Metrics made
// before on the same registerer are reused, so that limiters built apart
// (the gateway's local ones and the shared ones `bulwark gateway` builds)
// report under one family.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		limitedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "ratelimit", Name: "limited_requests_total",
			Help: "Requests refused because they were over a rate limit.",
		}, []string{"limiter"}),
		degradedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "ratelimit", Name: "degraded_decisions_total",
			Help: "Shared rate-limit decisions made from the local share because Redis was unavailable.",
		}, []string{"limiter"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "bulwark", Subsystem: "ratelimit", Name: "degraded",
			Help: "1 while a shared rate limiter cannot reach Redis and enforces its local share.",
		}, []string{"limiter"}),
	}
	if reg == nil {
		return nil, fmt.Errorf("rate limit metrics: nil registerer")
	}
	var err error
	if m.limitedTotal, err = register(reg, m.limitedTotal); err != nil {
		return nil, err
	}
	if m.degradedTotal, err = register(reg, m.degradedTotal); err != nil {
		return nil, err
	}
	if m.degraded, err = register(reg, m.degraded); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c with reg, or returns the identical collector
// registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("rate limit metrics: register: %w", err)
}

func (m *Metrics) limited(name string) {
	if m != nil {
		m.limitedTotal.WithLabelValues(name).Inc()
	}
}

func (m *Metrics) degradedDecision(name string) {
	if m != nil {
		m.degradedTotal.WithLabelValues(name).Inc()
	}
}

func (m *Metrics) setDegraded(name string, on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.degraded.WithLabelValues(name).Set(v)
	}
}
