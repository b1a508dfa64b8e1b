package mesh_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A service may use its agent as its HTTP proxy (HTTP_PROXY) and call
// http://<service>/<path>: the same resolution, mTLS and policy as the
// path form, and nothing else goes through.
func TestOutboundAsHTTPProxy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	proxied := func(base string) *http.Client {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{Proxy: http.ProxyURL(u)}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: testDeadline}
	}
	payments, notifications := proxied(w.payments), proxied(w.notifications)
	for _, tc := range []struct {
		name       string
		c          *http.Client
		method     string
		url        string
		body       string
		wantStatus int
		wantPath   string
		wantQuery  string
	}{
		{"payments calls ledger", payments, http.MethodPost, "http://ledger/v1/entries?account=a%2F1", `{"amount":5}`,
			http.StatusOK, "/v1/entries", "account=a%2F1"},
		{"the port is ignored, the name is case-insensitive", payments, http.MethodGet, "http://LEDGER:8080/v1/x", "", http.StatusOK, "/v1/x", ""},
		{"no path", payments, http.MethodGet, "http://ledger", "", http.StatusOK, "/", ""},
		{"notifications may not call ledger", notifications, http.MethodGet, "http://ledger/v1/entries", "", http.StatusForbidden, "", ""},
		{"unknown service", payments, http.MethodGet, "http://vault/x", "", http.StatusNotFound, "", ""},
		{"not a service name", payments, http.MethodGet, "http://ledger.example.com/x", "", http.StatusNotFound, "", ""},
		{"an IP address", payments, http.MethodGet, "http://169.254.169.254/latest/meta-data", "", http.StatusNotFound, "", ""},
		{"body over the limit", payments, http.MethodPost, "http://ledger/x", strings.Repeat("a", 2<<10), http.StatusRequestEntityTooLarge, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.echo.hits.Load()
			status, body := do(t, tc.c, tc.method, tc.url, tc.body, nil)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", status, tc.wantStatus, body)
			}
			if tc.wantStatus != http.StatusOK {
				if got := w.echo.hits.Load(); got != before {
					t.Fatalf("the service was reached (%d hits)", got-before)
				}
				return
			}
			e := decodeEcho(t, body)
			if got := e.Headers.Get("X-Bulwark-Peer-Id"); got != paymentsID || e.PeerErr != "" {
				t.Errorf("service saw peer %q (signature: %s), want %q", got, e.PeerErr, paymentsID)
			}
			if e.Path != tc.wantPath || e.Query != tc.wantQuery || e.Body != tc.body {
				t.Errorf("service saw path %q query %q body %q, want %q %q %q", e.Path, e.Query, e.Body, tc.wantPath, tc.wantQuery, tc.body)
			}
			if e.Headers.Get("Proxy-Connection") != "" || e.Headers.Get("Proxy-Authorization") != "" {
				t.Errorf("proxy headers reached the service: %v", e.Headers)
			}
		})
	}

	// https:// through the agent would be a CONNECT tunnel carrying the
	// service's own TLS: refused, the agent makes the mTLS itself.
	before := w.echo.hits.Load()
	resp, err := payments.Get("https://ledger/v1/entries")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("https through the agent: status %d, want the tunnel refused", resp.StatusCode)
	}
	if !strings.Contains(err.Error(), "Method Not Allowed") {
		t.Errorf("https through the agent: %v, want the CONNECT refused with 405", err)
	}
	if got := w.echo.hits.Load(); got != before {
		t.Fatalf("the service was reached through a tunnel")
	}
}
