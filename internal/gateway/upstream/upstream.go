// Package upstream is the gateway's connection to the services behind it, a
// set of security controls that fail closed: one circuit breaker per
// endpoint (sony/gobreaker/v2), a timeout per attempt, bounded retries for
// idempotent requests only, and round-robin balancing that skips endpoints
// whose breaker is open and endpoints that are quarantined. When no endpoint
// is usable the pool answers at once with ErrNoHealthyUpstream (a 503 with
// Retry-After from Handler) instead of waiting on a dead upstream.
//
// The pool sits behind authentication and authorization: degraded mode
// (open breakers, quarantined instances) only ever refuses more, it never
// lets a request skip a check.
package upstream

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults applied to zero fields of Config.
const (
	DefaultTimeout             = 5 * time.Second
	DefaultMaxRetries          = 1
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = 10 * time.Second
	DefaultHalfOpenRequests    = 1
	DefaultMaxBodyBytes        = 1 << 20
)

// Bounds on Config, so that a typo cannot turn a control into a no-op.
const (
	maxRetriesLimit = 3
	maxTimeout      = 5 * time.Minute
	maxOpenFor      = time.Hour
)

// ErrNoHealthyUpstream is returned when every endpoint of a pool is open
// (its breaker tripped) or quarantined. Errors carrying it are *NoHealthyError.
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ErrUpstreamTimeout is returned when an attempt ran out of its Timeout.
var ErrUpstreamTimeout = errors.New("upstream timeout")

// NoHealthyError is the error returned when no endpoint can be used; it
// matches ErrNoHealthyUpstream with errors.Is.
type NoHealthyError struct {
	// Upstream is the pool's name.
	Upstream string
	// RetryAfter is how long until the first open breaker lets a probe
	// through (at least one second).
	RetryAfter time.Duration
}

func (e *NoHealthyError) Error() string {
	return fmt.Sprintf("upstream %s: %v", e.Upstream, ErrNoHealthyUpstream)
}

// Unwrap returns ErrNoHealthyUpstream.
func (e *NoHealthyError) Unwrap() error { return ErrNoHealthyUpstream }

// BreakerConfig configures the circuit breaker of each endpoint.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker (default 5). A failure is a
	// transport error, a timeout or a 5xx response; a 4xx is not.
	ConsecutiveFailures int
	// OpenFor is how long an open breaker refuses requests before letting a
	// probe through (default 10s).
	OpenFor time.Duration
	// HalfOpenRequests is how many probes a half-open breaker lets through
	// at once, and how many successes in a row close it (default 1).
	HalfOpenRequests int
}

// Config configures a Pool. Its zero fields take the documented defaults.
type Config struct {
	// Name names the upstream service in metrics, logs and breaker names.
	Name string
	// Endpoints are the instances, as host:port.
	Endpoints []string
	// Scheme is "http" (default) or "https".
	Scheme string
	// Timeout bounds each attempt, from sending the request to the end of
	// the response body (default 5s).
	Timeout time.Duration
	// MaxRetries is how many times a failed idempotent request (GET, HEAD,
	// OPTIONS, PUT, DELETE) is tried again (default 1, at most 3; negative
	// disables retries). A request with a body is retried only if its body
	// is replayable (GetBody) or no byte of it was read.
	MaxRetries int
	// Breaker configures the per-endpoint circuit breakers.
	Breaker BreakerConfig
	// MaxBodyBytes bounds request bodies proxied by Handler (default 1 MiB).
	MaxBodyBytes int64
}

// Deps are the Pool's collaborators; every field is optional.
type Deps struct {
	// Transport carries the attempts (default: a dedicated http.Transport
	// that ignores proxy environment variables).
	Transport http.RoundTripper
	// Logger receives breaker transitions and proxy errors.
	Logger *slog.Logger
	// Metrics records breaker states, trips and retries.
	Metrics *Metrics
	// Now is the clock used for Retry-After (default time.Now). The
	// breakers themselves use real time (gobreaker has no clock hook).
	Now func() time.Time
	// OnTrip is called on every breaker state change with the breaker's
	// name ("<upstream>/<host:port>"). It runs while the breaker is locked:
	// it must be quick and must not call back into the Pool.
	OnTrip func(name string, from, to gobreaker.State)
	// Quarantined reports endpoints that must receive no traffic.
	Quarantined func(endpoint string) bool
}

// Pool is a balanced, breaker-protected set of endpoints of one upstream. It
// is an http.RoundTripper and is safe for concurrent use.
type Pool struct {
	cfg       Config
	endpoints []*endpoint
	transport http.RoundTripper
	logger    *slog.Logger
	metrics   *Metrics
	now       func() time.Time
	onTrip    func(string, gobreaker.State, gobreaker.State)
	quar      func(string) bool
	next      atomic.Uint64
}

type endpoint struct {
	addr     string
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	openedAt atomic.Int64 // unix nanoseconds by Deps.Now, 0 when not open
}

var _ http.RoundTripper = (*Pool)(nil)

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// New validates cfg, applies defaults and returns a Pool.
func New(cfg Config, deps Deps) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg: cfg, transport: deps.Transport, logger: deps.Logger, metrics: deps.Metrics,
		now: deps.Now, onTrip: deps.OnTrip, quar: deps.Quarantined,
	}
	if p.transport == nil {
		p.transport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: cfg.Timeout,
		}
	}
	if p.logger == nil {
		p.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.now == nil {
		p.now = time.Now
	}
	for _, addr := range cfg.Endpoints {
		e := &endpoint{addr: addr}
		threshold := uint32(cfg.Breaker.ConsecutiveFailures)
		e.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        cfg.Name + "/" + addr,
			MaxRequests: uint32(cfg.Breaker.HalfOpenRequests),
			Timeout:     cfg.Breaker.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= threshold
			},
			IsExcluded:    func(err error) bool { return errors.Is(err, errClientGone) },
			OnStateChange: func(name string, from, to gobreaker.State) { p.stateChanged(e, name, from, to) },
		})
		p.metrics.setState(cfg.Name, addr, gobreaker.StateClosed)
		p.endpoints = append(p.endpoints, e)
	}
	return p, nil
}

func (c Config) withDefaults() (Config, error) {
	if !validName.MatchString(c.Name) {
		return c, fmt.Errorf("upstream config: name %q: want 1-64 of [A-Za-z0-9._-]", c.Name)
	}
	if len(c.Endpoints) == 0 {
		return c, fmt.Errorf("upstream %s: no endpoints", c.Name)
	}
	seen := make(map[string]bool, len(c.Endpoints))
	for _, ep := range c.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			return c, fmt.Errorf("upstream %s: %w", c.Name, err)
		}
		if seen[ep] {
			return c, fmt.Errorf("upstream %s: endpoint %q listed twice", c.Name, ep)
		}
		seen[ep] = true
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	switch c.Scheme {
	case "":
		c.Scheme = "http"
	case "http", "https":
	default:
		return c, fmt.Errorf("upstream %s: scheme %q: want http or https", c.Name, c.Scheme)
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < 0 || c.Timeout > maxTimeout:
		return c, fmt.Errorf("upstream %s: timeout %v out of range (0, %v]", c.Name, c.Timeout, maxTimeout)
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	case c.MaxRetries > maxRetriesLimit:
		return c, fmt.Errorf("upstream %s: max retries %d over %d", c.Name, c.MaxRetries, maxRetriesLimit)
	}
	b := &c.Breaker
	switch {
	case b.ConsecutiveFailures == 0:
		b.ConsecutiveFailures = DefaultConsecutiveFailures
	case b.ConsecutiveFailures < 0 || b.ConsecutiveFailures > 1000:
		return c, fmt.Errorf("upstream %s: breaker consecutive failures %d out of range [1, 1000]", c.Name, b.ConsecutiveFailures)
	}
	switch {
	case b.OpenFor == 0:
		b.OpenFor = DefaultOpenFor
	case b.OpenFor < 0 || b.OpenFor > maxOpenFor:
		return c, fmt.Errorf("upstream %s: breaker open-for %v out of range (0, %v]", c.Name, b.OpenFor, maxOpenFor)
	}
	switch {
	case b.HalfOpenRequests == 0:
		b.HalfOpenRequests = DefaultHalfOpenRequests
	case b.HalfOpenRequests < 0 || b.HalfOpenRequests > 100:
		return c, fmt.Errorf("upstream %s: breaker half-open requests %d out of range [1, 100]", c.Name, b.HalfOpenRequests)
	}
	switch {
	case c.MaxBodyBytes == 0:
		c.MaxBodyBytes = DefaultMaxBodyBytes
	case c.MaxBodyBytes < 0:
		return c, fmt.Errorf("upstream %s: negative max body bytes", c.Name)
	}
	return c, nil
}

// checkEndpoint accepts host:port where host is a DNS name or IPv4 address
// ([A-Za-z0-9._-]) or a bracketed IPv6 address without zone, and the port
// is 1-65535 in canonical form.
func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("endpoint %q: %w", ep, err)
	}
	if host == "" {
		return fmt.Errorf("endpoint %q: empty host", ep)
	}
	if strings.HasPrefix(ep, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("endpoint %q: bracketed host must be an IPv6 address", ep)
		}
	} else {
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
				return fmt.Errorf("endpoint %q: invalid character in host", ep)
			}
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("endpoint %q: port must be 1-65535", ep)
	}
	return nil
}

// Name returns the pool's upstream name.
func (p *Pool) Name() string { return p.cfg.Name }

// State returns the breaker state of endpoint, and false for an unknown
// endpoint.
func (p *Pool) State(endpoint string) (gobreaker.State, bool) {
	for _, e := range p.endpoints {
		if e.addr == endpoint {
			return e.cb.State(), true
		}
	}
	return gobreaker.StateClosed, false
}

// stateChanged runs under the breaker's lock (see Deps.OnTrip).
func (p *Pool) stateChanged(e *endpoint, name string, from, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		e.openedAt.Store(p.now().UnixNano())
		p.metrics.trip(p.cfg.Name, e.addr)
		p.logger.Warn("upstream breaker opened", "upstream", p.cfg.Name, "endpoint", e.addr, "from", from.String())
	} else {
		e.openedAt.Store(0)
		p.logger.Info("upstream breaker state", "upstream", p.cfg.Name, "endpoint", e.addr,
			"from", from.String(), "to", to.String())
	}
	p.metrics.setState(p.cfg.Name, e.addr, to)
	if p.onTrip != nil {
		p.onTrip(name, from, to)
	}
}

// pick chooses the next usable endpoint round-robin, preferring ones not in
// tried, and admits the request through its breaker.
func (p *Pool) pick(tried map[*endpoint]bool) (*endpoint, func(error), error) {
	n := uint64(len(p.endpoints))
	start := p.next.Add(1)
	for pass := 0; pass < 2; pass++ {
		for i := uint64(0); i < n; i++ {
			e := p.endpoints[(start+i)%n]
			if (pass == 0) == tried[e] {
				continue
			}
			if p.quar != nil && p.quar(e.addr) {
				continue
			}
			if e.cb.State() == gobreaker.StateOpen {
				continue
			}
			done, err := e.cb.Allow()
			if err != nil {
				continue
			}
			return e, done, nil
		}
	}
	return nil, nil, &NoHealthyError{Upstream: p.cfg.Name, RetryAfter: p.retryAfter()}
}

// retryAfter is the time until the first open breaker admits a probe
// (OpenFor when no breaker is open, e.g. all quarantined), rounded up to
// whole seconds, at least one second.
func (p *Pool) retryAfter() time.Duration {
	now := p.now()
	best := p.cfg.Breaker.OpenFor
	for _, e := range p.endpoints {
		if e.cb.State() == gobreaker.StateHalfOpen { // probing now
			best = 0
		}
		if at := e.openedAt.Load(); at != 0 {
			if left := time.Unix(0, at).Add(p.cfg.Breaker.OpenFor).Sub(now); left < best {
				best = left
			}
		}
	}
	secs := (best + time.Second - 1) / time.Second
	if secs < 1 {
		secs = 1
	}
	return secs * time.Second
}
