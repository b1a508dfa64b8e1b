// Package redistest connects tests to the test Redis that scripts/test-deps.sh
// starts: a test that needs it fails, never skips, when it is unreachable.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Addr is the test Redis: BULWARK_TEST_REDIS or 127.0.0.1:6379.
func Addr() string {
	if a := os.Getenv("BULWARK_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// New returns a client of the test Redis, closed at cleanup; the test fails
// when Redis does not answer within 5 s.
func New(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("this test needs Redis at %s (scripts/test-deps.sh starts one; BULWARK_TEST_REDIS overrides): %v", Addr(), err)
	}
	return c
}

// Prefix returns a random key prefix under which a test keeps its keys, and
// deletes those keys at cleanup.
func Prefix(t testing.TB, c *redis.Client) string {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	prefix := "bulwark-test:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			_ = c.Del(ctx, iter.Val()).Err()
		}
		if err := iter.Err(); err != nil {
			t.Errorf("clean up %s*: %v", prefix, err)
		}
	})
	return prefix
}
