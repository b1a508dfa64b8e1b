// Package egress guards every outbound connection the platform makes to a
// URL it did not choose itself (webhooks, JWKS of federated issuers, OIDC
// discovery): it refuses loopback, link-local, private, cloud-metadata and
// other non-public addresses unless the configuration explicitly allows
// them.
//
// The check runs twice. CheckURL validates a URL early (scheme, no
// credentials, IP literals in every form a resolver would accept). The
// Guard's dialer then checks the IP address actually being connected to,
// after DNS resolution and on every redirect, so DNS rebinding and
// redirects to internal addresses cannot get around it.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultMaxRedirects = 3
	DefaultTimeout      = 10 * time.Second
)

// Config configures a Guard. Its zero value is the safe default: https
// only, every non-public address refused, at most three redirects, a
// ten-second timeout.
type Config struct {
	// Allow lists address prefixes that may be reached although they are
	// in a refused range (for example an internal webhook receiver). An
	// address inside an Allow prefix is always permitted, cloud metadata
	// addresses included. IPv4 addresses match in their plain and
	// IPv4-mapped IPv6 forms; NAT64 and 6to4 embeddings do not match.
	Allow []netip.Prefix
	// AllowHosts lists exact host names (case-insensitive, no wildcards)
	// that may resolve to addresses in refused ranges. Cloud metadata
	// addresses stay refused for them unless also covered by Allow.
	AllowHosts []string
	// Schemes lists the URL schemes that may be fetched: "https" and/or
	// "http". Empty means https only; http must be opted in.
	Schemes []string
	// MaxRedirects bounds the redirects HTTPClient follows. Zero means
	// DefaultMaxRedirects; a negative value means no redirect is followed.
	MaxRedirects int
	// Timeout bounds a whole request of HTTPClient and each dial. Zero
	// means DefaultTimeout.
	Timeout time.Duration
	// OnBlocked, if set, is called for every refusal (for auditing). It
	// must be safe for concurrent use and must not block.
	OnBlocked func(BlockedError)
}

// BlockedError reports a refused URL or connection.
type BlockedError struct {
	// Host is the host name or literal as it appeared in the URL or dial
	// address.
	Host string
	// IP is the refused address; it is the zero Addr when the refusal did
	// not concern an address (scheme, credentials, malformed URL).
	IP netip.Addr
	// Reason is one of the Reason* constants.
	Reason string
}

// Error implements error.
func (e *BlockedError) Error() string {
	if e.IP.IsValid() {
		return fmt.Sprintf("egress: refused %q (%s): %s", e.Host, e.IP, e.Reason)
	}
	return fmt.Sprintf("egress: refused %q: %s", e.Host, e.Reason)
}

// Guard enforces the egress policy. It is safe for concurrent use.
type Guard struct {
	allow        []netip.Prefix
	allowHosts   map[string]struct{}
	schemes      map[string]struct{}
	maxRedirects int
	timeout      time.Duration
	onBlocked    func(BlockedError)
}

// New validates cfg and returns a Guard.
func New(cfg Config) (*Guard, error) {
	g := &Guard{
		allowHosts:   make(map[string]struct{}, len(cfg.AllowHosts)),
		schemes:      make(map[string]struct{}, 2),
		maxRedirects: cfg.MaxRedirects,
		timeout:      cfg.Timeout,
		onBlocked:    cfg.OnBlocked,
	}
	for i, p := range cfg.Allow {
		if !p.IsValid() {
			return nil, fmt.Errorf("egress: config: allow[%d]: invalid prefix", i)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		g.allow = append(g.allow, p.Masked())
	}
	for i, h := range cfg.AllowHosts {
		n := normalizeHost(h)
		if n == "" || strings.ContainsAny(n, "*:/@ ") {
			return nil, fmt.Errorf("egress: config: allow_hosts[%d] %q: want an exact host name", i, h)
		}
		if _, _, numeric, _ := parseHostIP(n); numeric {
			return nil, fmt.Errorf("egress: config: allow_hosts[%d] %q: an address belongs in allow as a prefix", i, h)
		}
		g.allowHosts[n] = struct{}{}
	}
	if len(cfg.Schemes) == 0 {
		g.schemes["https"] = struct{}{}
	}
	for i, s := range cfg.Schemes {
		s = strings.ToLower(s)
		if s != "https" && s != "http" {
			return nil, fmt.Errorf("egress: config: schemes[%d] %q: want https or http", i, cfg.Schemes[i])
		}
		g.schemes[s] = struct{}{}
	}
	switch {
	case cfg.MaxRedirects == 0:
		g.maxRedirects = DefaultMaxRedirects
	case cfg.MaxRedirects < 0:
		g.maxRedirects = 0
	}
	switch {
	case cfg.Timeout == 0:
		g.timeout = DefaultTimeout
	case cfg.Timeout < 0:
		return nil, errors.New("egress: config: timeout: must not be negative")
	}
	return g, nil
}

// normalizeHost lower-cases a host name and drops one trailing dot.
func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// CheckAddr reports whether a connection to addr, reached through the
// given host name (or IP literal), is permitted. It returns a
// *BlockedError when it is not, after calling OnBlocked.
func (g *Guard) CheckAddr(host string, addr netip.Addr) error {
	if reason := g.addrReason(host, addr); reason != "" {
		return g.block(host, addr, reason)
	}
	return nil
}

func (g *Guard) addrReason(host string, addr netip.Addr) string {
	addr = addr.WithZone("")
	for _, p := range g.allow {
		if p.Contains(addr) || p.Contains(addr.Unmap()) {
			return ""
		}
	}
	reason := classify(addr)
	if reason == "" || reason == ReasonMetadata {
		return reason
	}
	if _, ok := g.allowHosts[normalizeHost(host)]; ok {
		return ""
	}
	return reason
}

// block builds the error for a refusal and reports it to OnBlocked.
func (g *Guard) block(host string, addr netip.Addr, reason string) *BlockedError {
	e := BlockedError{Host: host, IP: addr, Reason: reason}
	if g.onBlocked != nil {
		g.onBlocked(e)
	}
	return &e
}
