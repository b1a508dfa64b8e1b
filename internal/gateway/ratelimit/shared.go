package ratelimit

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults and bounds for SharedConfig.
const (
	DefaultPrefix        = "bulwark:ratelimit:"
	DefaultTimeout       = 100 * time.Millisecond
	DefaultRetryInterval = time.Second
	maxReplicas          = 1024
	maxTimeout           = 5 * time.Second
	maxRetryInterval     = time.Minute
)

//go:embed gcra.lua
var gcraSource string

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// SharedConfig configures a Shared limiter. Name, Limit and Replicas are
// required.
type SharedConfig struct {
	// Name identifies the limit; it namespaces the Redis keys and labels
	// metrics. Letters, digits, '_', '.', '-'; at most 64.
	Name string
	// Prefix is prepended to every Redis key; empty means DefaultPrefix.
	Prefix string
	// Limit is the combined limit of all replicas, per key.
	Limit Limit
	// Replicas is the number of gateway replicas sharing Limit. While
	// Redis is unavailable each replica enforces Limit/Replicas alone
	// (at least one request of burst), so the combined limit holds.
	Replicas int
	// Timeout bounds one Redis decision; zero means DefaultTimeout.
	Timeout time.Duration
	// RetryInterval is how long after a Redis failure decisions stay local
	// before Redis is tried again; zero means DefaultRetryInterval.
	RetryInterval time.Duration
	// FallbackMaxKeys bounds the local fallback buckets; zero means
	// DefaultMaxKeys.
	FallbackMaxKeys int
	// Now is the local clock, used only for RetryInterval and the fallback
	// buckets (Redis decisions use Redis server time); nil means time.Now.
	Now func() time.Time
	// OnDegraded, if set, is called when the limiter starts deciding
	// locally (degraded true, with the Redis error) and when Redis answers
	// again (degraded false, nil error). It is called with a lock held: it
	// must not block or call the limiter.
	OnDegraded func(degraded bool, err error)
	// Metrics, if set, counts refused and degraded decisions under Name.
	Metrics *Metrics
}

// Shared is a rate limit shared by several gateway replicas, decided by one
// atomic GCRA script in Redis per request. It never fails open: when Redis
// fails it falls back to a local bucket holding the replica's share of the
// limit. When Redis comes back, its state does not include the decisions
// made locally meanwhile, so the combined limit may be exceeded once, by at
// most one Burst. It is safe for concurrent use.
type Shared struct {
	name          string
	prefix        string
	limit         Limit
	client        redis.Scripter
	script        *redis.Script
	intervalArg   string
	timeout       time.Duration
	retryInterval time.Duration
	now           func() time.Time
	onDegraded    func(bool, error)
	metrics       *Metrics
	fallback      *Local

	mu        sync.Mutex
	degraded  atomic.Bool // written with mu held; read without it
	downUntil time.Time
}

var _ Limiter = (*Shared)(nil)

// NewShared returns a Shared limiter that keeps its state in Redis through
// client. A *redis.Client or *redis.ClusterClient must be created with
// ContextTimeoutEnabled, so that Timeout bounds each decision.
func NewShared(cfg SharedConfig, client redis.Scripter) (*Shared, error) {
	if err := validateShared(&cfg, client); err != nil {
		return nil, fmt.Errorf("shared rate limiter %q: %w", cfg.Name, err)
	}
	fallback, err := NewLocal(LocalConfig{
		Name: cfg.Name, Limit: cfg.Limit.share(cfg.Replicas), MaxKeys: cfg.FallbackMaxKeys,
		Now: cfg.Now, Metrics: cfg.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("shared rate limiter %q: fallback: %w", cfg.Name, err)
	}
	return &Shared{
		name: cfg.Name, prefix: cfg.Prefix + cfg.Name + ":", limit: cfg.Limit, client: client,
		script:        redis.NewScript(gcraSource),
		intervalArg:   strconv.FormatFloat(1e6/cfg.Limit.Rate, 'f', -1, 64),
		timeout:       cfg.Timeout,
		retryInterval: cfg.RetryInterval,
		now:           cfg.Now,
		onDegraded:    cfg.OnDegraded,
		metrics:       cfg.Metrics,
		fallback:      fallback,
	}, nil
}

func validateShared(cfg *SharedConfig, client redis.Scripter) error {
	if !validName.MatchString(cfg.Name) {
		return fmt.Errorf("name %q must match %s", cfg.Name, validName)
	}
	if err := cfg.Limit.Validate(); err != nil {
		return err
	}
	if cfg.Replicas < 1 || cfg.Replicas > maxReplicas {
		return fmt.Errorf("replicas %d outside [1, %d]", cfg.Replicas, maxReplicas)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 || cfg.Timeout > maxTimeout {
		return fmt.Errorf("timeout %v outside (0, %v]", cfg.Timeout, maxTimeout)
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.RetryInterval < 0 || cfg.RetryInterval > maxRetryInterval {
		return fmt.Errorf("retry interval %v outside (0, %v]", cfg.RetryInterval, maxRetryInterval)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch c := client.(type) {
	case nil:
		return errors.New("nil redis client")
	case *redis.Client:
		if c == nil {
			return errors.New("nil redis client")
		}
		if !c.Options().ContextTimeoutEnabled {
			return errors.New("redis client needs ContextTimeoutEnabled so that decisions are bounded")
		}
	case *redis.ClusterClient:
		if c == nil {
			return errors.New("nil redis client")
		}
		if !c.Options().ContextTimeoutEnabled {
			return errors.New("redis client needs ContextTimeoutEnabled so that decisions are bounded")
		}
	}
	return nil
}

// Allow decides in Redis whether one more request for key is allowed, or,
// while Redis is unavailable, from the replica's local share of the limit
// (Result.Degraded). It returns an error only when ctx is done or key is
// empty.
func (s *Shared) Allow(ctx context.Context, key string) (Result, error) {
	if key == "" {
		return Result{}, ErrEmptyKey
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("shared rate limit %q: %w", s.name, err)
	}
	now := s.now()
	if s.isDown(now) {
		return s.allowLocal(ctx, key)
	}
	res, err := s.allowRedis(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("shared rate limit %q: %w", s.name, ctx.Err())
		}
		s.setDown(now, err)
		return s.allowLocal(ctx, key)
	}
	s.setUp()
	if !res.Allowed {
		s.metrics.limited(s.name)
	}
	return res, nil
}

// redisKey namespaces key and hashes it: client IDs, subjects and
// addresses stay out of Redis and the key length is fixed.
func (s *Shared) redisKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return s.prefix + hex.EncodeToString(sum[:16])
}

func (s *Shared) allowRedis(ctx context.Context, key string) (Result, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	vals, err := s.script.Run(rctx, s.client, []string{s.redisKey(key)}, s.intervalArg, s.limit.Burst).Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("redis gcra: %w", err)
	}
	if len(vals) != 4 || vals[0] < 0 || vals[0] > 1 || vals[1] < 0 || vals[2] < 0 {
		return Result{}, fmt.Errorf("redis gcra: malformed reply %v", vals)
	}
	res := Result{Allowed: vals[0] == 1, Remaining: int(vals[1]), Limit: s.limit}
	if !res.Allowed {
		res.RetryAfter = max(time.Duration(vals[2])*time.Microsecond, time.Microsecond)
	}
	return res, nil
}

func (s *Shared) allowLocal(ctx context.Context, key string) (Result, error) {
	s.metrics.degradedDecision(s.name)
	res, err := s.fallback.Allow(ctx, key)
	if err != nil {
		return Result{}, fmt.Errorf("shared rate limit %q: fallback: %w", s.name, err)
	}
	res.Degraded = true
	return res, nil
}

func (s *Shared) isDown(now time.Time) bool {
	if !s.degraded.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded.Load() && now.Before(s.downUntil)
}

func (s *Shared) setDown(now time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downUntil = now.Add(s.retryInterval)
	if s.degraded.Load() {
		return
	}
	s.degraded.Store(true)
	s.metrics.setDegraded(s.name, true)
	if s.onDegraded != nil {
		s.onDegraded(true, err)
	}
}

func (s *Shared) setUp() {
	if !s.degraded.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.degraded.Load() {
		return
	}
	s.degraded.Store(false)
	s.metrics.setDegraded(s.name, false)
	if s.onDegraded != nil {
		s.onDegraded(false, nil)
	}
}
