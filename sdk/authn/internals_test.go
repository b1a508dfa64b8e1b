package authn

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCachedTokenStillExpires(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	tok := iss.token("ed", iss.claims(nil))
	if _, err := v.VerifyToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	iss.clock.Advance(5*time.Minute + DefaultLeeway - time.Second)
	if _, err := v.VerifyToken(t.Context(), tok); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	iss.clock.Advance(2 * time.Second)
	_, err := v.VerifyToken(t.Context(), tok)
	if err == nil || err.(*Error).Reason != ReasonExpired {
		t.Fatalf("after exp + leeway: %v", err)
	}
	if v.cache.len() != 0 {
		t.Errorf("the expired entry is still cached")
	}
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	v := newVerifier(t, iss, nil, func(c *Config) { c.CacheSize = 64 })
	for range 300 {
		if _, err := v.VerifyToken(t.Context(), iss.token("ed", iss.claims(nil))); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n > 64 || n == 0 {
		t.Errorf("cache holds %d entries, want 1..64", n)
	}
	off := newVerifier(t, iss, nil, func(c *Config) { c.CacheSize = -1 })
	tok := iss.token("ed", iss.claims(nil))
	for range 2 {
		if _, err := off.VerifyToken(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if off.cache != nil {
		t.Error("a negative CacheSize left a cache")
	}
}

func TestReplayCache(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_760_000_000, 0)
	c := newReplayCache(time.Minute, 3)
	for _, tc := range []struct {
		name    string
		tp, jti string
		at      time.Duration
		want    replayResult
	}{
		{name: "first", tp: "k1", jti: "a", want: replayNew},
		{name: "again", tp: "k1", jti: "a", at: time.Second, want: replaySeen},
		{name: "same jti, other key", tp: "k2", jti: "a", at: time.Second, want: replayNew},
		{name: "third", tp: "k1", jti: "b", at: 2 * time.Second, want: replayNew},
		{name: "full", tp: "k1", jti: "c", at: 3 * time.Second, want: replayFull},
		{name: "after one period: still remembered", tp: "k1", jti: "a", at: 61 * time.Second, want: replaySeen},
		{name: "room after turning over", tp: "k1", jti: "c", at: 62 * time.Second, want: replayNew},
		{name: "after two periods: forgotten", tp: "k1", jti: "a", at: 122 * time.Second, want: replayNew},
		{name: "clock goes back", tp: "k1", jti: "a", at: 10 * time.Second, want: replaySeen},
	} {
		if got := c.seen(tc.tp, tc.jti, start.Add(tc.at)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMaxAge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header []string
		want   time.Duration
	}{
		{nil, 0},
		{[]string{"public, max-age=300"}, 300 * time.Second},
		{[]string{"no-cache", "MAX-AGE=60"}, time.Minute},
		{[]string{`max-age="15"`}, 15 * time.Second},
		{[]string{"max-age=-1"}, 0},
		{[]string{"max-age=abc"}, 0},
		{[]string{"max-age=99999999999"}, maxKeysMaxAge},
	} {
		h := http.Header{"Cache-Control": tc.header}
		if got := maxAge(h); got != tc.want {
			t.Errorf("maxAge(%q) = %s, want %s", tc.header, got, tc.want)
		}
	}
}

func TestLimitedReader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body    string
		limit   int64
		wantErr error
	}{
		{"abc", 3, nil},
		{"abc", 10, nil},
		{"abcd", 3, errTooLarge},
	} {
		got, err := io.ReadAll(&limitedReader{r: strings.NewReader(tc.body), n: tc.limit})
		if err != tc.wantErr || (err == nil && string(got) != tc.body) {
			t.Errorf("read %q with limit %d: %q, %v", tc.body, tc.limit, got, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for failures, want := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 3: 2 * time.Second, 20: 30 * time.Second} {
		got := backoff(failures, 30*time.Second)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(%d) = %s, want %s ± 20%%", failures, got, want)
		}
	}
}

func TestHasScopeOnNil(t *testing.T) {
	t.Parallel()
	var p *Principal
	if p.HasScope("x") {
		t.Error("a nil principal has a scope")
	}
}
