package upstream

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// backend is a real upstream on 127.0.0.1 that counts hits and answers
// with a settable status; status 0 means hang until the request is
// cancelled.
type backend struct {
	srv    *httptest.Server
	hits   atomic.Int64
	status atomic.Int64

	mu     sync.Mutex
	bodies []string
}

func newBackend(t testing.TB, status int) *backend {
	t.Helper()
	b := &backend{}
	b.status.Store(int64(status))
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.bodies = append(b.bodies, string(body))
		b.mu.Unlock()
		st := int(b.status.Load())
		if st == 0 {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		w.Header().Set("X-Backend", b.addr())
		w.WriteHeader(st)
		_, _ = io.WriteString(w, "panic: db password is hunter2 at 10.0.0.7") // internal detail
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

func (b *backend) gotBodies() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bodies...)
}

// deadAddr returns a 127.0.0.1 address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// transitions records OnTrip calls.
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) record(name string, from, to gobreaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, name+" "+from.String()+"->"+to.String())
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}

func newPool(t *testing.T, cfg Config, deps Deps) *Pool {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "orders"
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// gateway serves the pool's Handler on 127.0.0.1.
func gateway(t *testing.T, p *Pool) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(p.Handler(nil))
	t.Cleanup(srv.Close)
	return srv.URL, &http.Client{Timeout: 30 * time.Second}
}

type result struct {
	status     int
	body       string
	retryAfter string
	elapsed    time.Duration
}

func do(t *testing.T, c *http.Client, method, url, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After"),
		elapsed: time.Since(start)}
}

// errorCode decodes an httpapi error body.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	var eb httpapi.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return eb.Error.Code
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
