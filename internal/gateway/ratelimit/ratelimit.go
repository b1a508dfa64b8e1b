// Package ratelimit is the gateway's rate limiting, a security control that
// never fails open: in-process token buckets (Local), a Redis-backed GCRA
// limit shared by several gateway replicas (Shared) that falls back to the
// replica's share of the limit when Redis is unavailable, key helpers for
// per-client, per-user and per-IP limits, and HTTP middleware that answers
// 429 with Retry-After, or 503 when no decision can be made.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
)

// Bounds on a Limit, so that a typo in a config cannot disable a limit by
// making it effectively infinite.
const (
	MaxRate  = 1e6       // requests per second
	MaxBurst = 1_000_000 // requests
	// MaxRefill bounds Burst/Rate, the time an empty bucket takes to
	// refill (and a Redis key's longest TTL).
	MaxRefill = 7 * 24 * time.Hour
)

// maxKeyLen is the longest key stored as it is; longer keys are hashed so
// that memory per key stays bounded.
const maxKeyLen = 128

// Limit is a rate limit: Rate requests per second on average, with bursts
// of up to Burst requests.
type Limit struct {
	Rate  float64 // requests per second, > 0 and <= MaxRate
	Burst int     // requests, >= 1 and <= MaxBurst
}

// Validate reports whether l is a usable limit.
func (l Limit) Validate() error {
	switch {
	case math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) || l.Rate <= 0:
		return fmt.Errorf("rate limit: rate %v must be a positive number", l.Rate)
	case l.Rate > MaxRate:
		return fmt.Errorf("rate limit: rate %v above maximum %v", l.Rate, float64(MaxRate))
	case l.Burst < 1:
		return fmt.Errorf("rate limit: burst %d must be at least 1", l.Burst)
	case l.Burst > MaxBurst:
		return fmt.Errorf("rate limit: burst %d above maximum %d", l.Burst, MaxBurst)
	case float64(l.Burst)/l.Rate > MaxRefill.Seconds():
		return fmt.Errorf("rate limit: refill time %d/%v s above maximum %v", l.Burst, l.Rate, MaxRefill)
	}
	return nil
}

// interval is the time one request's token takes to refill.
func (l Limit) interval() time.Duration {
	return time.Duration(float64(time.Second) / l.Rate)
}

// share is the part of l that one of replicas replicas may use alone:
// the rate divided by replicas, and at least one request of burst.
func (l Limit) share(replicas int) Limit {
	return Limit{Rate: l.Rate / float64(replicas), Burst: max(1, l.Burst/replicas)}
}

// Result is one rate-limit decision.
type Result struct {
	// Allowed reports whether the request is within the limit.
	Allowed bool
	// RetryAfter is, for a refused request, the time until one request
	// would be allowed; zero when Allowed.
	RetryAfter time.Duration
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// Limit is the limit that was applied (for a degraded Shared limiter,
	// the replica's local share).
	Limit Limit
	// Degraded reports that a Shared limiter decided locally because Redis
	// was unavailable.
	Degraded bool
}

// Limiter decides whether one more request for key is allowed. An error
// means no decision could be made; callers must then refuse the request.
type Limiter interface {
	Allow(ctx context.Context, key string) (Result, error)
}

// ErrEmptyKey is returned for an empty key: a request that cannot be
// attributed to anyone is refused rather than sharing a bucket or bypassing
// the limit.
var ErrEmptyKey = errors.New("rate limit: empty key")

// boundKey returns key, or a hash of it when it is long.
func boundKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}
