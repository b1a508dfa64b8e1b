package identity

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the authorization server's Prometheus metrics.
type metrics struct {
	// tokensIssued counts tokens issued, by grant type.
	tokensIssued *prometheus.CounterVec
	// tokenErrors counts refused token, PAR, introspection and revocation
	// requests, by endpoint and OAuth error code.
	tokenErrors *prometheus.CounterVec
	// logins counts login attempts, by result (success, failure, locked).
	logins *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tokensIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_tokens_issued_total", Help: "Access tokens issued, by grant type."}, []string{"grant_type"}),
		tokenErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_errors_total", Help: "Refused OAuth requests, by endpoint and error code."}, []string{"endpoint", "error"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_identity_logins_total", Help: "User login attempts, by result."}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.tokensIssued, m.tokenErrors, m.logins} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("identity metrics: %w", err)
			}
		}
	}
	return m, nil
}
