// Package mesh is the core of the agent's mutual-TLS proxy: Inbound, an mTLS
// listener in front of one local service that authorizes every request by the
// Cedar service-to-service policy (default deny) and passes the verified peer
// identity to the service on loopback, and Outbound, a loopback HTTP listener
// that forwards a local service's calls (/<service>/<path>) to the destination's
// agent over mTLS, checking that it presents exactly the SPIFFE ID the service
// directory names.
//
// Both fail closed: a decider that refuses (no policy bundle, a stale one) denies,
// and a resolver that fails makes the outbound answer 503, never guess a
// destination. The identity headers X-Bulwark-* are the agent's: any sent by a
// caller is removed before the agent sets its own, and the inbound signs them
// with the key it shares with the service (sdk/peer), so that the service can
// refuse a request that bypassed the agent. The inbound verifies the internal
// token a request carries (when given a TokenVerifier) and never passes
// Authorization on. Both ends keep or create the request's X-Request-ID and
// W3C traceparent (internal/correlation), which the audit hooks OnDenied and
// OnAllowed receive. The outbound always presents its source's current SVID:
// after a rotation it drops the connections made with the old one.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// SVIDSource supplies the agent's X.509-SVID and the trust bundles
// (a *workloadapi.X509Source is one); it is what sdk/mtls takes.
type SVIDSource interface {
	x509svid.Source
	x509bundle.Source
}

// Decider answers authorization requests from the active policy bundle;
// *authz.Client and *authz.Evaluator are Deciders.
type Decider interface {
	Decide(authz.Request) authz.Decision
}

// Resolver finds a destination service by name in the service directory: its
// SPIFFE ID and the host:port endpoints of its agent. An unknown name is an
// error wrapping ErrUnknownService; any other error means the directory could
// not be consulted.
type Resolver interface {
	Resolve(ctx context.Context, name string) (spiffeid.ID, []string, error)
}

// ErrUnknownService is wrapped by a Resolver's error for a name the service
// directory does not hold.
var ErrUnknownService = errors.New("unknown service")

// Headers the agent sets for the local service. Every header with the
// HeaderPrefix sent by a caller is removed first, so the service can trust them.
const (
	// HeaderPrefix is the prefix of the agent's identity headers.
	HeaderPrefix = "X-Bulwark-"
	// HeaderPeerID carries the peer's verified SPIFFE ID.
	HeaderPeerID = "X-Bulwark-Peer-ID"
	// HeaderDecisionReasons carries the IDs of the permitting policies,
	// comma-separated.
	HeaderDecisionReasons = "X-Bulwark-Decision-Reasons"
)

// Error codes of the agent's JSON error responses, besides httpapi's.
const (
	// CodeForbidden: the policy denied the call.
	CodeForbidden = "forbidden"
	// CodeBadGateway: the destination could not be reached or refused.
	CodeBadGateway = "bad_gateway"
)

// DefaultAction is the Cedar action of a service-to-service call.
const DefaultAction = "call"

// Timeouts bound the phases of a proxied request. Zero fields take the
// Default*Timeout constants.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included.
	Read time.Duration
	// Write bounds writing the response.
	Write time.Duration
	// Idle is how long a kept-alive connection waits for its next request.
	Idle time.Duration
	// Upstream bounds waiting for the response headers of the next hop.
	Upstream time.Duration
}

// Defaults of Timeouts' zero fields.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultUpstreamTimeout   = 30 * time.Second
)

func (t Timeouts) withDefaults() Timeouts {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&t.ReadHeader, DefaultReadHeaderTimeout)
	def(&t.Read, DefaultReadTimeout)
	def(&t.Write, DefaultWriteTimeout)
	def(&t.Idle, DefaultIdleTimeout)
	def(&t.Upstream, DefaultUpstreamTimeout)
	return t
}

func (t Timeouts) validate() error {
	for name, d := range map[string]time.Duration{"read_header": t.ReadHeader, "read": t.Read, "write": t.Write, "idle": t.Idle, "upstream": t.Upstream} {
		if d < 0 {
			return fmt.Errorf("timeout %s is negative (%s)", name, d)
		}
	}
	return nil
}

// DefaultMaxHeaderBytes bounds request headers when the config leaves it 0.
const DefaultMaxHeaderBytes = 64 << 10

// DefaultMaxBodyBytes bounds request bodies when the config leaves it 0.
const DefaultMaxBodyBytes = 10 << 20

// stripBulwarkHeaders removes every X-Bulwark-* header of h.
func stripBulwarkHeaders(h http.Header) {
	for k := range h {
		if len(k) >= len(HeaderPrefix) && strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			delete(h, k)
		}
	}
}

// isLoopbackHost reports whether host (no port) is a loopback IP address or
// "localhost".
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkLoopbackAddr checks that addr is host:port with a loopback host.
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("address %q is not a loopback address", addr)
	}
	return nil
}

// parseLoopbackURL parses an http URL of a loopback host, without a path
// beyond "/", query, fragment or user info.
func parseLoopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream URL: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("upstream URL %q: scheme must be http (loopback)", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("upstream URL %q: only scheme, host and port are allowed", raw)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("upstream URL %q: host is not a loopback address", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}
