package caclient_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/ca/caclient"
)

// TestClientRefusesHostileAnswers: whatever a server (or whoever holds its
// address) answers, the client returns an error, never a panic nor
// half-parsed identities.
func TestClientRefusesHostileAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		code   string // the APIError code expected, if any
	}{
		{"error body", 401, `{"error":{"code":"invalid_join_token","message":"no"}}`, "invalid_join_token"},
		{"error without body", 502, `<html>bad gateway</html>`, ""},
		{"not JSON", 200, `not json`, ""},
		{"bad SPIFFE ID", 200, `{"spiffe_id":"https://evil","svid":["AAAA"]}`, ""},
		{"bad certificate", 200, `{"spiffe_id":"spiffe://example.test/agent/a","svid":["AAAA"]}`, ""},
		{"empty chain", 200, `{"spiffe_id":"spiffe://example.test/agent/a","svid":[]}`, ""},
		{"huge answer", 200, `{"spiffe_id":"` + strings.Repeat("a", 9<<20) + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer ts.Close()
			pool := x509.NewCertPool()
			pool.AddCert(ts.Certificate())
			res, err := caclient.New(ts.URL, pool).Join(context.Background(), "t", []byte{1})
			if err == nil || res != nil {
				t.Fatalf("Join = %+v, %v; want an error", res, err)
			}
			if tt.code != "" && !caclient.IsCode(err, tt.code) {
				t.Fatalf("error %v, want code %s", err, tt.code)
			}
		})
	}
}

// TestClientVerifiesTheServer: a server whose certificate the pool does
// not hold is refused before anything is sent.
func TestClientVerifiesTheServer(t *testing.T) {
	t.Parallel()
	got := make(chan struct{}, 1)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got <- struct{}{} }))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := caclient.New(ts.URL, x509.NewCertPool()).Join(ctx, "secret-token", []byte{1}); err == nil {
		t.Fatal("an untrusted server was accepted")
	}
	select {
	case <-got:
		t.Fatal("the join token reached an untrusted server")
	default:
	}
}
