package upstream

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Error codes of proxy failures, beyond those of httpapi.
const (
	CodeBadGateway      = "bad_gateway"
	CodeUpstreamTimeout = "upstream_timeout"
	CodeUpstreamError   = "upstream_error"
)

// Handler returns a reverse proxy to the pool. rewrite, if not nil, shapes
// the outbound request (path, headers; see httputil.ProxyRequest); the
// endpoint is always chosen by the pool. Hop-by-hop headers are removed by
// httputil.ReverseProxy, and so are client-sent X-Forwarded-* headers unless
// rewrite sets them. Request bodies over MaxBodyBytes get 413. Failures are
// JSON errors without internal detail: an upstream's 5xx keeps its status
// but its body is replaced; 503 with Retry-After when no endpoint
// is healthy, 504 on timeout, 502 otherwise.
func (p *Pool) Handler(rewrite func(*httputil.ProxyRequest)) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if rewrite != nil {
				rewrite(pr)
			}
			pr.Out.URL.Scheme, pr.Out.URL.Host = p.cfg.Scheme, p.cfg.Name
		},
		Transport: p,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode >= 500 {
				// An upstream's 5xx body may hold stack traces or addresses.
				return &upstreamStatusError{status: resp.StatusCode}
			}
			return nil
		},
		ErrorHandler: p.proxyError,
		ErrorLog:     slog.NewLogLogger(p.logger.Handler(), slog.LevelWarn),
	}
	limit := p.cfg.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			httpapi.WriteError(w, r, p.logger, httpapi.Errorf(http.StatusRequestEntityTooLarge,
				httpapi.CodeTooLarge, "request body over %d bytes", limit))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		rp.ServeHTTP(w, r)
	})
}

// proxyError answers a failed proxy request; the cause is only logged.
func (p *Pool) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var nh *NoHealthyError
	var tooBig *http.MaxBytesError
	var apiErr *httpapi.Error
	var st *upstreamStatusError
	switch {
	case errors.As(err, &nh):
		w.Header().Set("Retry-After", strconv.Itoa(int(nh.RetryAfter.Seconds())))
		apiErr = &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "upstream service unavailable; retry later", Err: err}
	case errors.As(err, &st):
		apiErr = &httpapi.Error{Status: st.status, Code: CodeUpstreamError,
			Message: "upstream service failed", Err: err}
	case errors.As(err, &tooBig):
		apiErr = httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge,
			"request body over %d bytes", tooBig.Limit)
	case errors.Is(err, ErrUpstreamTimeout):
		apiErr = &httpapi.Error{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout,
			Message: "upstream service timed out", Err: err}
	default:
		apiErr = &httpapi.Error{Status: http.StatusBadGateway, Code: CodeBadGateway,
			Message: "upstream service failed", Err: err}
	}
	httpapi.WriteError(w, r, p.logger, apiErr)
}

// upstreamStatusError is an upstream's 5xx answer, whose body is not sent on.
type upstreamStatusError struct{ status int }

func (e *upstreamStatusError) Error() string {
	return "upstream answered " + strconv.Itoa(e.status)
}
