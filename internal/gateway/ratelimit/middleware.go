package ratelimit

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// CodeRateLimited is the API error code of a request over a rate limit.
const CodeRateLimited = "rate_limited"

// MiddlewareOption configures Middleware.
type MiddlewareOption func(*middlewareConfig)

type middlewareConfig struct {
	logger *slog.Logger
}

// WithLogger logs limiter failures (the 503 answers) to logger.
func WithLogger(logger *slog.Logger) MiddlewareOption {
	return func(c *middlewareConfig) { c.logger = logger }
}

// Middleware enforces limiter on every request, keyed by keyFunc. A request
// over the limit gets 429 with Retry-After and a "rate_limited" JSON error,
// and onLimited (if not nil) is called, for auditing. When no decision can
// be made (the key function or the limiter fails) the answer is 503: the
// request never passes unlimited.
func Middleware(limiter Limiter, keyFunc KeyFunc, onLimited func(*http.Request, Result), opts ...MiddlewareOption) func(http.Handler) http.Handler {
	var cfg middlewareConfig
	for _, o := range opts {
		o(&cfg)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, err := decide(r, limiter, keyFunc)
			if err != nil {
				httpapi.WriteError(w, r, cfg.logger, &httpapi.Error{
					Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
					Message: "rate limit unavailable; retry later", Err: err,
				})
				return
			}
			if !res.Allowed {
				if onLimited != nil {
					onLimited(r, res)
				}
				w.Header().Set("Retry-After", RetryAfterSeconds(res.RetryAfter))
				httpapi.WriteError(w, r, cfg.logger, httpapi.Errorf(http.StatusTooManyRequests,
					CodeRateLimited, "too many requests; retry later"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func decide(r *http.Request, limiter Limiter, keyFunc KeyFunc) (Result, error) {
	if limiter == nil || keyFunc == nil {
		return Result{}, fmt.Errorf("rate limit: middleware without limiter or key function")
	}
	key, err := keyFunc(r)
	if err != nil {
		return Result{}, fmt.Errorf("rate limit: key: %w", err)
	}
	if key == "" {
		return Result{}, ErrEmptyKey
	}
	res, err := limiter.Allow(r.Context(), key)
	if err != nil {
		return Result{}, fmt.Errorf("rate limit: decide: %w", err)
	}
	return res, nil
}

// RetryAfterSeconds formats d as a Retry-After value: whole seconds,
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) string {
	s := math.Ceil(d.Seconds())
	switch {
	case s < 1 || math.IsNaN(s):
		s = 1
	case s > 86400:
		s = 86400
	}
	return strconv.FormatInt(int64(s), 10)
}
