package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// errServerError marks a 5xx response as a breaker failure.
var errServerError = errors.New("upstream answered 5xx")

// errClientGone marks an attempt abandoned by the caller; it neither trips
// nor heals a breaker.
var errClientGone = errors.New("request cancelled by client")

// errBodyDetached is read by a transport still holding the body of an
// attempt that was abandoned for a retry.
var errBodyDetached = errors.New("request body moved to a retry")

// idempotent reports the methods that may be retried.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// RoundTrip sends req to one endpoint of the pool, retrying a failed
// idempotent request on another endpoint when allowed. The request's URL
// host and scheme are replaced by the chosen endpoint's; its Host header is
// kept. It returns an error matching ErrNoHealthyUpstream when no endpoint
// can be used, and ErrUpstreamTimeout when the last attempt timed out.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	retries := 0
	if idempotent(req.Method) {
		retries = p.cfg.MaxRetries
	}
	var shared *sharedBody
	if hasBody && req.GetBody == nil && retries > 0 {
		shared = &sharedBody{rc: req.Body}
	}
	bodyUsed := false
	closeBody := func() {
		if hasBody && !bodyUsed && shared == nil {
			_ = req.Body.Close()
		}
	}
	tried := make(map[*endpoint]bool, len(p.endpoints))
	var lastResp *http.Response
	for attempt := 0; ; attempt++ {
		e, done, err := p.pick(tried)
		if err != nil {
			if shared != nil {
				shared.close()
			}
			if lastResp != nil { // a retry found nowhere to go: answer with what we have
				return lastResp, nil
			}
			closeBody()
			return nil, err
		}
		if lastResp != nil {
			drain(lastResp.Body)
			lastResp = nil
		}
		if attempt > 0 {
			p.metrics.retry(p.cfg.Name)
		}
		tried[e] = true

		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host = p.cfg.Scheme, e.addr
		var v *bodyView
		switch {
		case !hasBody:
		case shared != nil:
			v = &bodyView{b: shared}
			out.Body = v
		case attempt == 0:
			out.Body = req.Body
		default: // replayable via GetBody
			body, gerr := req.GetBody()
			if gerr != nil {
				done(errClientGone) // the endpoint was never contacted: not counted
				return nil, fmt.Errorf("upstream %s: replay request body: %w", p.cfg.Name, gerr)
			}
			out.Body = body
		}
		bodyUsed = bodyUsed || hasBody

		resp, err := p.attempt(out, done)
		canRetry := attempt < retries && !errors.Is(err, errClientGone)
		if v != nil {
			if canRetry && (err != nil || resp.StatusCode >= 500) {
				canRetry = v.detach() // false once any byte may have been sent
			}
			if !canRetry || (err == nil && resp.StatusCode < 500) {
				v.finalize()
			}
		}
		if err == nil && resp.StatusCode < 500 {
			return resp, nil
		}
		if !canRetry {
			if err != nil {
				return nil, err
			}
			return resp, nil
		}
		if err == nil {
			lastResp = resp
		}
		p.logger.Debug("upstream retry", "upstream", p.cfg.Name, "endpoint", e.addr, "attempt", attempt+1)
	}
}

// attempt sends out under the per-attempt timeout and reports the outcome
// to the endpoint's breaker.
func (p *Pool) attempt(out *http.Request, done func(error)) (*http.Response, error) {
	parent := out.Context()
	ctx, cancel := context.WithTimeout(parent, p.cfg.Timeout)
	out = out.WithContext(ctx)
	resp, err := p.transport.RoundTrip(out)
	var tooBig *http.MaxBytesError
	switch {
	case err != nil && (parent.Err() != nil || errors.As(err, &tooBig)):
		cancel()
		done(errClientGone)
		// The client's fault (gone, or body over the limit): not the upstream's.
		return nil, fmt.Errorf("upstream %s: %w: %w", p.cfg.Name, errClientGone, err)
	case err != nil && (ctx.Err() != nil || isTimeout(err)):
		cancel()
		done(err)
		return nil, fmt.Errorf("upstream %s at %s: %w", p.cfg.Name, out.URL.Host, ErrUpstreamTimeout)
	case err != nil:
		cancel()
		done(err)
		return nil, fmt.Errorf("upstream %s at %s: %w", p.cfg.Name, out.URL.Host, err)
	case resp.StatusCode >= 500:
		done(errServerError)
	default:
		done(nil)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// drain discards a little of a response body so that its connection can be
// reused, then closes it.
func drain(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 4<<10)
	_ = rc.Close()
}

// cancelOnClose releases an attempt's timeout when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// sharedBody is a request body that cannot be replayed, offered to
// successive attempts until one of them reads from it.
type sharedBody struct {
	rc        io.ReadCloser
	touched   atomic.Bool
	closeOnce sync.Once
}

func (b *sharedBody) close() {
	b.closeOnce.Do(func() { _ = b.rc.Close() })
}

// bodyView is one attempt's handle on a sharedBody. The transport's Close
// is held back until the pool knows whether the body goes to a retry.
type bodyView struct {
	b        *sharedBody
	detached atomic.Bool

	mu     sync.Mutex
	closed bool
	final  bool
}

func (v *bodyView) Read(p []byte) (int, error) {
	// Mark first, check second; detach does the opposite, so a read and a
	// detach can never both proceed.
	v.b.touched.Store(true)
	if v.detached.Load() {
		return 0, errBodyDetached
	}
	return v.b.rc.Read(p)
}

func (v *bodyView) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	if v.final {
		v.b.close()
	}
	return nil
}

// detach takes the body away from this attempt and reports whether it is
// still untouched, so that a retry may send it.
func (v *bodyView) detach() bool {
	v.detached.Store(true)
	return !v.b.touched.Load()
}

// finalize makes this attempt the body's last user: its Close (now or
// later) closes the underlying body.
func (v *bodyView) finalize() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.final = true
	if v.closed {
		v.b.close()
	}
}

// isTimeout reports a transport-level timeout (dial, TLS handshake).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
