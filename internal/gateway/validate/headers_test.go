package validate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestSanitizeHeaders(t *testing.T) {
	tests := []struct {
		name    string
		in      http.Header
		removed []string
		kept    []string
	}{
		{
			name:    "identity spoofing",
			in:      http.Header{"X-Bulwark-User": {"admin"}, "X-Bulwark-Spiffe-Id": {"spiffe://bank/ledger"}, "Authorization": {"Bearer t"}},
			removed: []string{"X-Bulwark-Spiffe-Id", "X-Bulwark-User"},
			kept:    []string{"Authorization"},
		},
		{
			name: "forwarding and client IP claims",
			in: http.Header{"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Host": {"internal"}, "Forwarded": {"for=10.0.0.1"},
				"X-Real-Ip": {"10.0.0.1"}, "True-Client-Ip": {"10.0.0.1"}, "Accept": {"*/*"}},
			removed: []string{"Forwarded", "True-Client-Ip", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip"},
			kept:    []string{"Accept"},
		},
		{
			name:    "non-canonical and underscore spellings",
			in:      http.Header{"x-bulwark-user": {"admin"}, "X_Bulwark_User": {"admin"}, "x_forwarded_for": {"1.2.3.4"}},
			removed: []string{"X-Bulwark-User", "X_bulwark_user", "X_forwarded_for"},
		},
		{
			name:    "hop-by-hop",
			in:      http.Header{"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}, "Te": {"trailers"}, "Trailer": {"X-Bulwark-User"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"websocket"}, "Proxy-Authorization": {"Basic x"}, "Proxy-Connection": {"keep-alive"}, "Content-Type": {"application/json"}},
			removed: []string{"Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"},
			kept:    []string{"Content-Type"},
		},
		{
			name:    "headers listed in Connection",
			in:      http.Header{"Connection": {"close, X-Custom-Hop", " x-bulwark-foo "}, "X-Custom-Hop": {"1"}, "X-Bulwark-Foo": {"1"}, "X-Other": {"1"}},
			removed: []string{"Connection", "X-Bulwark-Foo", "X-Custom-Hop"},
			kept:    []string{"X-Other"},
		},
		{
			name:    "method and URL overrides",
			in:      http.Header{"X-Http-Method-Override": {"DELETE"}, "X-Original-Url": {"/admin"}, "X-Rewrite-Url": {"/admin"}},
			removed: []string{"X-Http-Method-Override", "X-Original-Url", "X-Rewrite-Url"},
		},
		{
			name: "clean request",
			in:   http.Header{"Accept": {"*/*"}, "User-Agent": {"x"}},
			kept: []string{"Accept", "User-Agent"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			got := SanitizeHeaders(h)
			if !slices.Equal(got, tc.removed) {
				t.Errorf("removed = %q, want %q", got, tc.removed)
			}
			if len(h) != len(tc.kept) {
				t.Errorf("left %v, want only %q", h, tc.kept)
			}
			for _, k := range tc.kept {
				if h.Get(k) == "" {
					t.Errorf("%s was removed", k)
				}
			}
		})
	}
}

// TestHopByHopTrick drives a real client through a gateway (SanitizeHeaders,
// then the gateway's own identity header, then httputil.ReverseProxy) to a
// real upstream. A client that lists the gateway's identity header in
// Connection must not get the proxy to drop it, and its own copy of the
// header must never arrive.
func TestHopByHopTrick(t *testing.T) {
	var (
		mu  sync.Mutex
		got http.Header
	)
	upstreamSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
	}))
	defer upstreamSrv.Close()
	target, _ := url.Parse(upstreamSrv.URL)
	var removed []string
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		removed = SanitizeHeaders(r.Header)
		r.Header.Set("X-Bulwark-User", "alice") // verified identity, set by the gateway
		proxy.ServeHTTP(w, r)
	}))
	defer gateway.Close()

	req, _ := http.NewRequest("GET", gateway.URL+"/accounts/acc_1234", nil)
	req.Header.Set("Connection", "X-Bulwark-User, X-Forwarded-For")
	req.Header["X-Bulwark-User"] = []string{"admin"}
	req.Header.Set("X-Bulwark-Roles", "superuser")
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	resp, err := gateway.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	if u := got.Values("X-Bulwark-User"); !slices.Equal(u, []string{"alice"}) {
		t.Errorf("upstream X-Bulwark-User = %q, want only the gateway's [alice]", u)
	}
	if got.Get("X-Bulwark-Roles") != "" {
		t.Error("client X-Bulwark-Roles reached the upstream")
	}
	// ReverseProxy appends the real peer; the client's claim must be gone.
	if xff := got.Get("X-Forwarded-For"); strings.Contains(xff, ",") {
		t.Errorf("client X-Forwarded-For survived: %q", xff)
	}
	for _, want := range []string{"Connection", "X-Bulwark-Roles", "X-Bulwark-User", "X-Forwarded-For"} {
		if !slices.Contains(removed, want) {
			t.Errorf("removed %q does not report %s", removed, want)
		}
	}
}

func TestMethodNotAllowedSetsAllow(t *testing.T) {
	srv, _ := startGateway(t, Config{})
	req, _ := http.NewRequest("PATCH", srv.URL+"/accounts/acc_1234", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("status %d Allow %q, want 405 GET", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}
