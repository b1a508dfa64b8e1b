package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus metrics.
type metrics struct {
	requests    *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	auditErrors prometheus.Counter
	stripped    prometheus.Counter
	trips       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_gateway_requests_total",
			Help: "Requests handled by the gateway, by route and status code.",
		}, []string{"route", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_gateway_refusals_total",
			Help: "Requests refused by the gateway, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulwark_gateway_request_duration_seconds",
			Help:    "Time from request to response, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		auditErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_gateway_audit_send_failures_total",
			Help: "Audit events the gateway could not hand to its spool.",
		}),
		stripped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_gateway_identity_headers_stripped_total",
			Help: "Requests that carried client-set identity or forwarding headers, which were removed.",
		}),
		trips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_gateway_breaker_transitions_total",
			Help: "Circuit breaker state changes of upstream endpoints, by new state.",
		}, []string{"to"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.refusals, m.duration, m.auditErrors, m.stripped, m.trips} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
