package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder collects OnBlocked calls.
type recorder struct {
	mu  sync.Mutex
	got []BlockedError
}

func (r *recorder) hook(e BlockedError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, e)
}

func (r *recorder) all() []BlockedError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]BlockedError(nil), r.got...)
}

// target is a real HTTP server on 127.0.0.1:0 that counts connections
// and requests.
type target struct {
	srv   *httptest.Server
	conns atomic.Int64
	hits  atomic.Int64
	port  string
}

func newTarget(t *testing.T, h http.HandlerFunc) *target {
	t.Helper()
	tg := &target{}
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }
	}
	tg.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.hits.Add(1)
		h(w, r)
	}))
	tg.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			tg.conns.Add(1)
		}
	}
	tg.srv.Start()
	t.Cleanup(tg.srv.Close)
	_, tg.port, _ = net.SplitHostPort(tg.srv.Listener.Addr().String())
	return tg
}

func newGuard(t *testing.T, cfg Config) (*Guard, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg.OnBlocked = rec.hook
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g, rec
}

func wantBlocked(t *testing.T, err error, reason string) *BlockedError {
	t.Helper()
	var be *BlockedError
	if !errors.As(err, &be) {
		t.Fatalf("error = %v, want a *BlockedError", err)
	}
	if reason != "" && be.Reason != reason {
		t.Fatalf("reason = %q, want %q (error %v)", be.Reason, reason, err)
	}
	return be
}

func TestHTTPClientRefusesLoopbackForms(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, nil)
	tests := []struct {
		name, url, reason string
	}{
		{"dotted quad", "http://127.0.0.1:%s/", ReasonLoopback},
		{"localhost name", "http://localhost:%s/", ReasonLocalhostName},
		{"localhost trailing dot", "http://LOCALHOST.:%s/", ReasonLocalhostName},
		{"decimal", "http://2130706433:%s/", ReasonLoopback},
		{"hex dword", "http://0x7f000001:%s/", ReasonLoopback},
		{"hex two parts", "http://0x7f.1:%s/", ReasonLoopback},
		{"octal", "http://0177.0.0.1:%s/", ReasonLoopback},
		{"short form", "http://127.1:%s/", ReasonLoopback},
		{"ipv4-mapped", "http://[::ffff:127.0.0.1]:%s/", ReasonLoopback},
		{"ipv4-mapped hex", "http://[::ffff:7f00:1]:%s/", ReasonLoopback},
		{"nat64 embedding", "http://[64:ff9b::7f00:1]:%s/", ReasonLoopback},
		{"6to4 embedding", "http://[2002:7f00:1::1]:%s/", ReasonLoopback},
		{"ipv6 loopback", "http://[::1]:%s/", ReasonLoopback},
		{"unspecified", "http://0.0.0.0:%s/", ReasonUnspecified},
		{"zero", "http://0:%s/", ReasonUnspecified},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, rec := newGuard(t, Config{Schemes: []string{"http", "https"}})
			resp, err := g.HTTPClient().Get(fmt.Sprintf(tc.url, tg.port))
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("GET %s succeeded, want refusal", tc.url)
			}
			wantBlocked(t, err, tc.reason)
			if got := rec.all(); len(got) == 0 || got[0].Reason != tc.reason {
				t.Fatalf("OnBlocked calls = %+v, want one with reason %q", got, tc.reason)
			}
		})
	}
	t.Cleanup(func() {
		if n := tg.conns.Load(); n != 0 {
			t.Errorf("target saw %d connections, want 0", n)
		}
	})
}

func TestRedirectToLoopbackRefused(t *testing.T) {
	t.Parallel()
	inner := newTarget(t, nil)
	tests := []struct {
		name, location, reason string
	}{
		{"dotted quad", "http://127.0.0.1:" + inner.port + "/secret", ReasonLoopback},
		{"decimal", "http://2130706433:" + inner.port + "/secret", ReasonLoopback},
		{"metadata", "http://169.254.169.254/latest/meta-data/", ReasonMetadata},
		{"scheme", "gopher://127.0.0.1:" + inner.port + "/", ReasonScheme},
		{"credentials", "http://user:pw@example.com/", ReasonUserinfo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			outer := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, tc.location, http.StatusFound)
			})
			// The outer server is reached through an allow-listed name;
			// the address it redirects to is not allowed.
			g, rec := newGuard(t, Config{Schemes: []string{"http"}, AllowHosts: []string{"localhost"}})
			resp, err := g.HTTPClient().Get("http://localhost:" + outer.port + "/")
			if err == nil {
				_ = resp.Body.Close()
				t.Fatal("redirect followed, want refusal")
			}
			wantBlocked(t, err, tc.reason)
			if outer.hits.Load() != 1 {
				t.Errorf("outer hits = %d, want 1", outer.hits.Load())
			}
			if got := rec.all(); len(got) != 1 || got[0].Reason != tc.reason {
				t.Errorf("OnBlocked calls = %+v, want one with reason %q", got, tc.reason)
			}
		})
	}
	t.Cleanup(func() {
		if n := inner.conns.Load(); n != 0 {
			t.Errorf("inner target saw %d connections, want 0", n)
		}
	})
}

func TestAllowHostsRedirectToAllowedHost(t *testing.T) {
	t.Parallel()
	inner := newTarget(t, nil)
	outer := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+inner.port+"/", http.StatusFound)
	})
	g, _ := newGuard(t, Config{Schemes: []string{"http"}, AllowHosts: []string{"localhost"}})
	resp, err := g.HTTPClient().Get("http://localhost:" + outer.port + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if inner.hits.Load() != 1 {
		t.Errorf("inner hits = %d, want 1", inner.hits.Load())
	}
}

func TestMetadataRefusedWithoutTraffic(t *testing.T) {
	t.Parallel()
	urls := []string{
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		"https://169.254.169.254/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/",
		"http://0xa9fea9fe/",
		"http://2852039166/",
		"http://169.254.43518/",
		"http://[64:ff9b::a9fe:a9fe]/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			g, rec := newGuard(t, Config{Schemes: []string{"http", "https"}})
			var traffic atomic.Int64
			trace := &httptrace.ClientTrace{
				GetConn:      func(string) { traffic.Add(1) },
				DNSStart:     func(httptrace.DNSStartInfo) { traffic.Add(1) },
				ConnectStart: func(string, string) { traffic.Add(1) },
			}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := g.HTTPClient().Do(req)
			if err == nil {
				_ = resp.Body.Close()
				t.Fatal("request succeeded, want refusal")
			}
			wantBlocked(t, err, ReasonMetadata)
			if n := traffic.Load(); n != 0 {
				t.Errorf("saw %d connection/DNS attempts, want 0", n)
			}
			if len(rec.all()) != 1 {
				t.Errorf("OnBlocked calls = %d, want 1", len(rec.all()))
			}
		})
	}
}

func TestDialRefusesBeforeConnect(t *testing.T) {
	t.Parallel()
	// A real connect to the metadata address would hang or fail with a
	// network error; the guard refuses in the socket control hook, before
	// connect, so the error is immediate and a *BlockedError.
	g, rec := newGuard(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := g.DialContext(ctx, "tcp", "169.254.169.254:80")
	if err == nil {
		_ = conn.Close()
		t.Fatal("dial succeeded")
	}
	be := wantBlocked(t, err, ReasonMetadata)
	if be.IP != netip.MustParseAddr("169.254.169.254") {
		t.Errorf("IP = %v", be.IP)
	}
	if ctx.Err() != nil {
		t.Error("dial ran into the deadline, want immediate refusal")
	}
	if len(rec.all()) != 1 {
		t.Errorf("OnBlocked calls = %d, want 1", len(rec.all()))
	}
}

func TestDialTimeResolutionRefused(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, nil)
	g, rec := newGuard(t, Config{})
	conn, err := g.DialContext(context.Background(), "tcp", "localhost:"+tg.port)
	if err == nil {
		_ = conn.Close()
		t.Fatal("dial to localhost succeeded, want refusal")
	}
	be := wantBlocked(t, err, ReasonLoopback)
	if be.Host != "localhost" || !be.IP.IsLoopback() {
		t.Errorf("blocked = %+v, want host localhost and a loopback IP", be)
	}
	if len(rec.all()) == 0 {
		t.Error("OnBlocked not called")
	}
	if n := tg.conns.Load(); n != 0 {
		t.Errorf("target saw %d connections, want 0", n)
	}

	for _, network := range []string{"udp", "unix", "ip4:icmp"} {
		if _, err := g.DialContext(context.Background(), network, "localhost:"+tg.port); err == nil {
			t.Errorf("dial %s succeeded", network)
		} else {
			wantBlocked(t, err, ReasonNetwork)
		}
	}
}

func TestAllowPrefixLetsServerThrough(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, nil)
	tests := []struct {
		name  string
		allow string
		ok    bool
	}{
		{"exact", "127.0.0.1/32", true},
		{"loopback block", "127.0.0.0/8", true},
		{"other address", "127.0.0.2/32", false},
		{"mapped form", "::ffff:127.0.0.1/128", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, rec := newGuard(t, Config{
				Schemes: []string{"http"},
				Allow:   []netip.Prefix{netip.MustParsePrefix(tc.allow)},
			})
			resp, err := g.HTTPClient().Get("http://127.0.0.1:" + tg.port + "/")
			if !tc.ok {
				if err == nil {
					_ = resp.Body.Close()
					t.Fatal("request succeeded, want refusal")
				}
				wantBlocked(t, err, ReasonLoopback)
				return
			}
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			body, err := ReadLimited(resp.Body, 1<<10)
			if err != nil || string(body) != "ok" {
				t.Fatalf("body = %q, %v", body, err)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("OnBlocked calls = %d, want 0", n)
			}
		})
	}
}

func TestHTTPRefusedUnlessEnabled(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, nil)
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	g, rec := newGuard(t, Config{Allow: allow})
	resp, err := g.HTTPClient().Get("http://127.0.0.1:" + tg.port + "/")
	if err == nil {
		_ = resp.Body.Close()
		t.Fatal("plain http allowed by default")
	}
	wantBlocked(t, err, ReasonScheme)
	if len(rec.all()) != 1 || tg.conns.Load() != 0 {
		t.Errorf("hook calls %d, target conns %d; want 1, 0", len(rec.all()), tg.conns.Load())
	}

	g2, _ := newGuard(t, Config{Allow: allow, Schemes: []string{"HTTP"}})
	resp, err = g2.HTTPClient().Get("http://127.0.0.1:" + tg.port + "/")
	if err != nil {
		t.Fatalf("http opted in: %v", err)
	}
	_ = resp.Body.Close()
	if err := g2.CheckURL("https://example.com/"); err == nil {
		t.Error("https allowed although Schemes lists only http")
	}
}

func TestMaxRedirects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		max      int
		wantHits int64
	}{
		{"default", 0, DefaultMaxRedirects + 1},
		{"two", 2, 3},
		{"none", -1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/again", http.StatusFound)
			})
			g, rec := newGuard(t, Config{
				Schemes:      []string{"http"},
				Allow:        []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
				MaxRedirects: tc.max,
			})
			resp, err := g.HTTPClient().Get("http://127.0.0.1:" + tg.port + "/")
			if err == nil {
				_ = resp.Body.Close()
				t.Fatal("redirect loop succeeded")
			}
			wantBlocked(t, err, ReasonRedirects)
			if got := tg.hits.Load(); got != tc.wantHits {
				t.Errorf("hits = %d, want %d", got, tc.wantHits)
			}
			if len(rec.all()) != 1 {
				t.Errorf("OnBlocked calls = %d, want 1", len(rec.all()))
			}
		})
	}
}

func TestNoProxyFromEnvironment(t *testing.T) {
	t.Parallel()
	g, _ := newGuard(t, Config{})
	tr := g.HTTPClient().Transport.(*guardedTransport).base.(*http.Transport)
	if tr.Proxy != nil {
		t.Fatal("transport uses a proxy function")
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	g, _ := newGuard(t, Config{
		Schemes:    []string{"https"},
		AllowHosts: []string{"idp.internal"},
		Allow:      []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")},
	})
	tests := []struct {
		url    string
		reason string // "" means accepted
	}{
		{"https://example.com/.well-known/jwks.json", ""},
		{"https://8.8.8.8/", ""},
		{"https://[2606:4700:4700::1111]/", ""},
		{"https://idp.internal/jwks", ""},
		{"https://IDP.internal./jwks", ""},
		{"https://10.1.2.3/hook", ""},
		{"https://10.1.3.3/hook", ReasonPrivate},
		{"https://127.0.0.1.nip.io/", ""}, // a name: checked at dial time
		{"http://example.com/", ReasonScheme},
		{"ftp://example.com/", ReasonScheme},
		{"file:///etc/passwd", ReasonScheme},
		{"//example.com/", ReasonScheme},
		{"https://user@example.com/", ReasonUserinfo},
		{"https://user:pw@example.com/", ReasonUserinfo},
		{"https:///path", ReasonNoHost},
		{"https:example.com", ReasonNoHost},
		{"https://example.com:0/", ReasonBadURL},
		{"https://example.com:99999/", ReasonBadURL},
		{"https://exa mple.com/", ReasonBadURL},
		{"https://localhost/", ReasonLocalhostName},
		{"https://api.localhost/", ReasonLocalhostName},
		{"https://10.0.0.1/", ReasonPrivate},
		{"https://172.16.0.1/", ReasonPrivate},
		{"https://172.31.255.255/", ReasonPrivate},
		{"https://172.32.0.1/", ""},
		{"https://192.168.1.1/", ReasonPrivate},
		{"https://100.64.0.1/", ReasonSharedCGNAT},
		{"https://169.254.1.1/", ReasonLinkLocal},
		{"https://169.254.169.254/", ReasonMetadata},
		{"https://224.0.0.1/", ReasonMulticast},
		{"https://255.255.255.255/", ReasonBroadcast},
		{"https://0.1.2.3/", ReasonThisNetwork},
		{"https://198.18.0.1/", ReasonBenchmarking},
		{"https://198.19.255.255/", ReasonBenchmarking},
		{"https://240.0.0.1/", ReasonReserved},
		{"https://[fe80::1%25eth0]/", ReasonLinkLocal},
		{"https://[fc00::1]/", ReasonPrivate},
		{"https://[fd00:ec2::254]/", ReasonMetadata},
		{"https://[ff02::1]/", ReasonMulticast},
		{"https://[::]/", ReasonUnspecified},
		{"https://[::127.0.0.1]/", ReasonIPv4Compat},
		{"https://[::ffff:10.0.0.1]/", ReasonPrivate},
		{"https://[::ffff:8.8.8.8]/", ""},
		{"https://[64:ff9b::10.0.0.1]/", ReasonPrivate},
		{"https://[64:ff9b::8.8.8.8]/", ""},
		{"https://[2002:a9fe:a9fe::]/", ReasonMetadata},
		{"https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", ReasonTeredo},
		{"https://0x08080808/", ReasonNonCanonical},
		{"https://010.0.0.1/", ReasonNonCanonical}, // octal 8.0.0.1: parsers disagree
		{"https://012.0.0.1/", ReasonPrivate},      // octal 10.0.0.1
		{"https://167772161/", ReasonPrivate},
		{"https://1.2.3.4.5/", ReasonBadIPLiteral},
		{"https://256.0.0.1/", ReasonBadIPLiteral},
		{"https://4294967296/", ReasonBadIPLiteral},
		{"https://09.0.0.1/", ReasonBadIPLiteral},
		{"https://0x/", ReasonUnspecified},
		{"https://127。0。0。1/", ReasonNonASCIIHost},
		{"https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", ReasonNonASCIIHost},
		{"https://xn--bcher-kva.example/", ""},
		{"https://1.0x/", ReasonNonCanonical},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			err := g.CheckURL(tc.url)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want nil", tc.url, err)
				}
				return
			}
			wantBlocked(t, err, tc.reason)
		})
	}
}

func TestAllowHostsKeepsMetadataRefused(t *testing.T) {
	t.Parallel()
	g, _ := newGuard(t, Config{AllowHosts: []string{"meta.internal"}})
	tests := []struct {
		host, addr, reason string
	}{
		{"meta.internal", "10.0.0.5", ""},
		{"meta.internal", "127.0.0.1", ""},
		{"meta.internal", "169.254.169.254", ReasonMetadata},
		{"meta.internal", "::ffff:169.254.169.254", ReasonMetadata},
		{"meta.internal", "fd00:ec2::254", ReasonMetadata},
		{"other.internal", "10.0.0.5", ReasonPrivate},
	}
	for _, tc := range tests {
		err := g.CheckAddr(tc.host, netip.MustParseAddr(tc.addr))
		if tc.reason == "" {
			if err != nil {
				t.Errorf("CheckAddr(%s, %s) = %v", tc.host, tc.addr, err)
			}
			continue
		}
		wantBlocked(t, err, tc.reason)
	}
	g2, _ := newGuard(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}})
	if err := g2.CheckAddr("x", netip.MustParseAddr("169.254.169.254")); err != nil {
		t.Errorf("explicit Allow of the metadata address: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"zero value", Config{}, ""},
		{"bad scheme", Config{Schemes: []string{"ftp"}}, "schemes[0]"},
		{"invalid prefix", Config{Allow: []netip.Prefix{{}}}, "allow[0]"},
		{"wildcard host", Config{AllowHosts: []string{"*.example.com"}}, "allow_hosts[0]"},
		{"empty host", Config{AllowHosts: []string{" "}}, "allow_hosts[0]"},
		{"ip as host", Config{AllowHosts: []string{"127.0.0.1"}}, "allow_hosts[0]"},
		{"host with port", Config{AllowHosts: []string{"a.example:443"}}, "allow_hosts[0]"},
		{"negative timeout", Config{Timeout: -time.Second}, "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New error = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestReadLimited(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		limit   int64
		tooBig  bool
		wantErr bool
	}{
		{"under", "abc", 4, false, false},
		{"exact", "abcd", 4, false, false},
		{"over", "abcde", 4, true, true},
		{"empty", "", 0, false, false},
		{"negative limit", "a", -1, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := ReadLimited(strings.NewReader(tc.body), tc.limit)
			if (err != nil) != tc.wantErr || errors.Is(err, ErrTooLarge) != tc.tooBig {
				t.Fatalf("err = %v, wantErr %v tooBig %v", err, tc.wantErr, tc.tooBig)
			}
			if err == nil && string(b) != tc.body {
				t.Fatalf("body = %q", b)
			}
		})
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	t.Parallel()
	e := &BlockedError{Host: "a", IP: netip.MustParseAddr("10.0.0.1"), Reason: ReasonPrivate}
	if got := e.Error(); got != `egress: refused "a" (10.0.0.1): private address` {
		t.Errorf("Error() = %q", got)
	}
	e = &BlockedError{Host: "a", Reason: ReasonScheme}
	if got := e.Error(); got != `egress: refused "a": scheme not allowed` {
		t.Errorf("Error() = %q", got)
	}
}

func TestHTTPClientRefusesNameResolvingToBlockedAtDial(t *testing.T) {
	t.Parallel()
	// The machine's own host name passes CheckURL (it is a name) but
	// usually resolves to a loopback or private address; the dial-time
	// check must then refuse it.
	name, err := os.Hostname()
	if err != nil || name == "" || strings.Contains(name, "localhost") {
		t.Skip("no usable host name")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil || len(addrs) == 0 {
		t.Skipf("host name %q does not resolve: %v", name, err)
	}
	for _, a := range addrs {
		if classify(a) == "" {
			t.Skipf("host name %q resolves to public %v", name, a)
		}
	}
	tg := newTarget(t, nil)
	g, rec := newGuard(t, Config{Schemes: []string{"http"}})
	u := "http://" + net.JoinHostPort(name, tg.port) + "/"
	if err := g.CheckURL(u); err != nil {
		t.Fatalf("CheckURL(%q) = %v, want nil (names are checked at dial time)", u, err)
	}
	resp, err := g.HTTPClient().Get(u)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatalf("GET %s succeeded, want refusal", u)
	}
	be := wantBlocked(t, err, "")
	if !be.IP.IsValid() || be.Host != name {
		t.Errorf("blocked = %+v, want host %q and the resolved IP", be, name)
	}
	if len(rec.all()) == 0 || tg.conns.Load() != 0 {
		t.Errorf("hook calls %d, target conns %d", len(rec.all()), tg.conns.Load())
	}
}
