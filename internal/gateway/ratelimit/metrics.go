package ratelimit

import (
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

// NewMetrics creates the metrics and registers them with reg.
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
	for _, c := range []prometheus.Collector{m.limitedTotal, m.degradedTotal, m.degraded} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("rate limit metrics: register: %w", err)
		}
	}
	return m, nil
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
