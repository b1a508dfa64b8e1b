package upstream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Metrics are the optional Prometheus metrics of upstream pools. A nil
// *Metrics records nothing.
type Metrics struct {
	state   *prometheus.GaugeVec
	trips   *prometheus.CounterVec
	retries *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, fmt.Errorf("upstream metrics: nil registerer")
	}
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "bulwark", Subsystem: "upstream", Name: "breaker_state",
			Help: "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
		}, []string{"upstream", "endpoint"}),
		trips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "upstream", Name: "breaker_trips_total",
			Help: "Times an endpoint's circuit breaker opened.",
		}, []string{"upstream", "endpoint"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "upstream", Name: "retries_total",
			Help: "Idempotent requests sent again after a failed attempt.",
		}, []string{"upstream"}),
	}
	for _, c := range []prometheus.Collector{m.state, m.trips, m.retries} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("upstream metrics: register: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) setState(upstream, endpoint string, s gobreaker.State) {
	if m == nil {
		return
	}
	v := 0.0
	switch s {
	case gobreaker.StateHalfOpen:
		v = 1
	case gobreaker.StateOpen:
		v = 2
	}
	m.state.WithLabelValues(upstream, endpoint).Set(v)
}

func (m *Metrics) trip(upstream, endpoint string) {
	if m != nil {
		m.trips.WithLabelValues(upstream, endpoint).Inc()
	}
}

func (m *Metrics) retry(upstream string) {
	if m != nil {
		m.retries.WithLabelValues(upstream).Inc()
	}
}
