package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/redis/go-redis/v9"
)

type failingLimiter struct{}

func (failingLimiter) Allow(context.Context, string) (Result, error) {
	return Result{}, errors.New("redis: connection refused at 10.0.0.5:6379")
}

// serve starts a real server with the middleware in front of a handler
// that counts the requests reaching it.
func serve(t *testing.T, l Limiter, key KeyFunc, onLimited func(*http.Request, Result)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var reached atomic.Int64
	h := Middleware(l, key, onLimited)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	srv := httptest.NewServer(httpapi.WithRequestID(h))
	t.Cleanup(srv.Close)
	return srv, &reached
}

type response struct {
	status     int
	retryAfter string
	body       httpapi.ErrorBody
}

func get(t *testing.T, c *http.Client, url string) response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("error Content-Type %q", ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(&r.body); err != nil {
			t.Fatalf("error body: %v", err)
		}
	}
	return r
}

// Attack: a request flood gets 429 with Retry-After once over the limit,
// and every refusal is handed to onLimited for the audit trail.
func TestMiddlewareFlood(t *testing.T) {
	t.Parallel()
	clock := newManualClock()
	limit := Limit{Rate: 0.4, Burst: 5}
	l, err := NewLocal(LocalConfig{Name: "ip", Limit: limit, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var limited atomic.Int64
	srv, reached := serve(t, l, ByRemoteIP, func(r *http.Request, res Result) {
		if res.Allowed || res.Limit != limit || r.URL.Path != "/pay" {
			t.Errorf("onLimited(%s, %+v)", r.URL.Path, res)
		}
		limited.Add(1)
	})
	c := srv.Client()
	statuses := map[int]int{}
	for range 50 {
		r := get(t, c, srv.URL+"/pay")
		statuses[r.status]++
		if r.status == http.StatusTooManyRequests {
			if r.retryAfter != "3" { // 1 token at 0.4/s: 2.5s, rounded up
				t.Fatalf("Retry-After %q, want 3", r.retryAfter)
			}
			if r.body.Error.Code != CodeRateLimited || r.body.Error.RequestID == "" {
				t.Fatalf("429 body %+v", r.body)
			}
		}
	}
	if statuses[http.StatusOK] != 5 || statuses[http.StatusTooManyRequests] != 45 {
		t.Fatalf("statuses %v, want 5 OK and 45 429", statuses)
	}
	if reached.Load() != 5 || limited.Load() != 45 {
		t.Fatalf("handler reached %d times, onLimited %d times; want 5 and 45", reached.Load(), limited.Load())
	}
	clock.Advance(2500 * time.Millisecond)
	if r := get(t, c, srv.URL+"/pay"); r.status != http.StatusOK {
		t.Fatalf("after Retry-After: status %d", r.status)
	}
}

// Fail closed: when no decision can be made the answer is 503, the
// request never reaches the handler, and no internal detail leaks.
func TestMiddlewareFailsClosed(t *testing.T) {
	t.Parallel()
	ok, err := NewLocal(LocalConfig{Limit: Limit{Rate: 100, Burst: 100}})
	if err != nil {
		t.Fatal(err)
	}
	down := redis.NewClient(&redis.Options{Addr: closedAddr(t), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = down.Close() })
	shared := newShared(t, SharedConfig{Name: "ip", Limit: Limit{Rate: 0.01, Burst: 4}, Replicas: 2}, down)
	tests := []struct {
		name       string
		limiter    Limiter
		key        KeyFunc
		wantStatus []int // per request
	}{
		{"limiter error", failingLimiter{}, ByRemoteIP, []int{503, 503}},
		{"key error", ok, func(*http.Request) (string, error) { return "", errors.New("no principal") }, []int{503}},
		{"empty key", ok, func(*http.Request) (string, error) { return "", nil }, []int{503}},
		{"nil limiter", nil, ByRemoteIP, []int{503}},
		{"nil key function", ok, nil, []int{503}},
		{"redis down: local share", shared, ByRemoteIP, []int{200, 200, 429, 429}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var limited atomic.Int64
			srv, reached := serve(t, tt.limiter, tt.key, func(*http.Request, Result) { limited.Add(1) })
			want200, want429 := 0, 0
			for i, want := range tt.wantStatus {
				r := get(t, srv.Client(), srv.URL+"/")
				if r.status != want {
					t.Fatalf("request %d: status %d, want %d", i, r.status, want)
				}
				switch want {
				case 200:
					want200++
				case 429:
					want429++
				case 503:
					if r.body.Error.Code != httpapi.CodeUnavailable || r.body.Error.Message != "rate limit unavailable; retry later" {
						t.Fatalf("503 body %+v", r.body)
					}
				}
			}
			if reached.Load() != int64(want200) || limited.Load() != int64(want429) {
				t.Fatalf("handler reached %d, onLimited %d; want %d and %d", reached.Load(), limited.Load(), want200, want429)
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "1"},
		{-time.Second, "1"},
		{time.Nanosecond, "1"},
		{999 * time.Millisecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{2500 * time.Millisecond, "3"},
		{time.Hour, "3600"},
		{1000 * time.Hour, "86400"},
	}
	for _, tt := range tests {
		if got := RetryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
