package ratelimit

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Bounds and default for LocalConfig.MaxKeys.
const (
	DefaultMaxKeys = 100_000
	maxMaxKeys     = 10_000_000
)

// LocalConfig configures a Local limiter. Only Limit is required.
type LocalConfig struct {
	// Name labels the limiter in metrics ("ip", "client", "user").
	Name string
	// Limit applies to each key separately.
	Limit Limit
	// MaxKeys bounds memory: when a new key arrives and MaxKeys buckets
	// exist, the least recently used bucket is evicted. Evicting a full
	// bucket loses nothing; evicting another one gives that key at most
	// the tokens it had not yet refilled. Zero means DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics, if set, counts refused requests under Name.
	Metrics *Metrics
}

// Local is a set of in-process token buckets keyed by string, with bounded
// memory. It is safe for concurrent use.
type Local struct {
	name    string
	limit   Limit
	maxKeys int
	now     func() time.Time
	metrics *Metrics

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

var _ Limiter = (*Local)(nil)

// NewLocal returns a Local limiter.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.Limit.Validate(); err != nil {
		return nil, fmt.Errorf("local rate limiter %q: %w", cfg.Name, err)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxKeys < 1 || cfg.MaxKeys > maxMaxKeys {
		return nil, fmt.Errorf("local rate limiter %q: max keys %d outside [1, %d]", cfg.Name, cfg.MaxKeys, maxMaxKeys)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Local{
		name: cfg.Name, limit: cfg.Limit, maxKeys: cfg.MaxKeys, now: cfg.Now, metrics: cfg.Metrics,
		buckets: make(map[string]*list.Element),
	}, nil
}

// Allow takes one token from key's bucket if it has one.
func (l *Local) Allow(_ context.Context, key string) (Result, error) {
	if key == "" {
		return Result{}, ErrEmptyKey
	}
	key = boundKey(key)
	now := l.now()

	l.mu.Lock()
	b := l.get(key, now)
	res := l.take(b, now)
	l.mu.Unlock()

	if !res.Allowed {
		l.metrics.limited(l.name)
	}
	return res, nil
}

// Len returns the number of buckets held.
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// get returns key's bucket, creating it full, and marks it most recently
// used. l.mu must be held.
func (l *Local) get(key string, now time.Time) *bucket {
	if e, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	l.evictIdle(now, 4)
	for len(l.buckets) >= l.maxKeys {
		oldest := l.lru.Back()
		l.lru.Remove(oldest)
		delete(l.buckets, oldest.Value.(*bucket).key)
	}
	b := &bucket{key: key, tokens: float64(l.limit.Burst), last: now}
	l.buckets[key] = l.lru.PushFront(b)
	return b
}

// evictIdle drops up to n least recently used buckets that have refilled
// completely: forgetting them changes no decision. l.mu must be held.
func (l *Local) evictIdle(now time.Time, n int) {
	full := time.Duration(float64(l.limit.Burst) * float64(l.limit.interval()))
	for ; n > 0; n-- {
		e := l.lru.Back()
		if e == nil || now.Sub(e.Value.(*bucket).last) < full {
			return
		}
		l.lru.Remove(e)
		delete(l.buckets, e.Value.(*bucket).key)
	}
}

// take refills b up to now and takes one token. l.mu must be held.
func (l *Local) take(b *bucket, now time.Time) Result {
	burst := float64(l.limit.Burst)
	if elapsed := now.Sub(b.last); elapsed > 0 { // a clock stepping back refills nothing
		b.tokens = math.Min(burst, b.tokens+elapsed.Seconds()*l.limit.Rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return Result{Allowed: true, Remaining: int(b.tokens), Limit: l.limit}
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.limit.Rate * float64(time.Second)))
	return Result{RetryAfter: max(wait, 1), Limit: l.limit}
}
