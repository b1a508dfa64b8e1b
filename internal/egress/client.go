package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrTooLarge is returned by ReadLimited when the body exceeds its limit.
var ErrTooLarge = errors.New("egress: response body too large")

type dialHostKey struct{}

// DialContext connects like net.Dialer.DialContext, but only over TCP and
// only to permitted addresses. The check runs on the address actually
// being connected to, after DNS resolution (in the dialer's socket
// control hook, before any packet is sent), so a name that resolves, or
// re-resolves, to a refused address is refused. Refusals are
// *BlockedError values (wrapped in a *net.OpError; use errors.As).
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, g.block(address, netip.Addr{}, ReasonNetwork)
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("egress: dial %q: %w", address, err)
	}
	d := net.Dialer{
		Timeout:        g.timeout,
		KeepAlive:      30 * time.Second,
		ControlContext: g.control,
	}
	conn, err := d.DialContext(context.WithValue(ctx, dialHostKey{}, host), network, address)
	if err != nil {
		return nil, fmt.Errorf("egress: dial %q: %w", address, err)
	}
	return conn, nil
}

// control runs after the socket is created and before connect: address is
// the resolved IP and port being dialled.
func (g *Guard) control(ctx context.Context, _ string, address string, _ syscall.RawConn) error {
	host, _ := ctx.Value(dialHostKey{}).(string)
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return g.block(host, netip.Addr{}, ReasonBadIPLiteral)
	}
	return g.CheckAddr(host, ap.Addr())
}

// guardedTransport re-validates every request URL, the redirected ones
// included, before handing it to the underlying transport.
type guardedTransport struct {
	g    *Guard
	base http.RoundTripper
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.g.checkParsed(req.URL); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(req)
}

// HTTPClient returns a new client whose every request, redirects included,
// goes through the Guard: URLs are checked with CheckURL, connections with
// the guarded dialer, proxies from the environment are ignored, at most
// MaxRedirects redirects are followed and the whole request is bounded by
// Timeout. Read bodies with ReadLimited. Each call returns a client with
// its own connection pool; callers should keep and reuse one.
func (g *Guard) HTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    g.timeout,
		ResponseHeaderTimeout:  g.timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: &guardedTransport{g: g, base: tr},
		Timeout:   g.timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > g.maxRedirects {
				return g.block(req.URL.Hostname(), netip.Addr{}, ReasonRedirects)
			}
			return nil // the redirect's URL is checked by guardedTransport
		},
	}
}

// ReadLimited reads r to the end and returns its contents, or ErrTooLarge
// (wrapped) if r holds more than limit bytes.
func ReadLimited(r io.Reader, limit int64) ([]byte, error) {
	if limit < 0 {
		return nil, fmt.Errorf("egress: read limit %d: must not be negative", limit)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("egress: read body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("egress: read body over %d bytes: %w", limit, ErrTooLarge)
	}
	return b, nil
}
