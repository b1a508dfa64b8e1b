package upstream

import (
	"io"
	"net/http"
	"testing"
	"time"
)

func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name   string
		status int
	}{
		{"healthy", http.StatusOK},
		{"breaker open", http.StatusInternalServerError},
	} {
		b.Run(tc.name, func(b *testing.B) {
			be := newBackend(b, tc.status)
			p, err := New(Config{Name: "orders", Endpoints: []string{be.addr()}, MaxRetries: -1,
				Breaker: BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Hour}}, Deps{})
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, "http://orders/x", nil)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := p.RoundTrip(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}
