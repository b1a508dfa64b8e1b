package mtls

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ServerConfig returns a TLS server configuration that presents the
// X.509-SVID of svid, requires a client X.509-SVID, verifies it against the
// trust bundles of bundles and lets authz decide. TLS 1.2 is the minimum;
// session tickets are on, and a resumed session is verified and authorized
// again (see the package documentation). The configuration sets
// WrapSession and UnwrapSession for that: do not replace them. To share
// session ticket keys between replicas, call SetSessionTicketKeys on the
// returned configuration before cloning it.
//
// The sources are read at every handshake, so a rotated SVID or bundle
// takes effect on the next connection. A nil source or authorizer makes
// every handshake fail; it never lets a peer in.
func ServerConfig(svid x509svid.Source, bundles x509bundle.Source, authz Authorizer, opts ...Option) *tls.Config {
	check := newPeerCheck(bundles, authz)
	cfg := tlsconfig.MTLSServerConfig(orNoSVID(svid), bundles, check.tlsconfig())
	cfg.MinVersion = tls.VersionTLS12
	cfg.SessionTicketsDisabled = false
	check.hookSessionTickets(cfg)
	cfg.VerifyConnection = check.verifyConnection
	applyOptions(cfg, SideServer, opts)
	return cfg
}

// ClientConfig returns a TLS client configuration that presents the
// X.509-SVID of svid, verifies the server's X.509-SVID against the trust
// bundles of bundles and lets authz decide. TLS 1.2 is the minimum; the
// configuration holds its own session cache, so reuse it across
// connections (one per http.Transport, for example). A resumed session is
// verified and authorized again (see the package documentation).
//
// The server is identified by its SPIFFE ID, not by its host name: authz
// takes the place of host-name verification. A nil source or authorizer
// makes every handshake fail; it never trusts a server.
func ClientConfig(svid x509svid.Source, bundles x509bundle.Source, authz Authorizer, opts ...Option) *tls.Config {
	check := newPeerCheck(bundles, authz)
	cfg := tlsconfig.MTLSClientConfig(orNoSVID(svid), bundles, check.tlsconfig())
	cfg.MinVersion = tls.VersionTLS12
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	cfg.VerifyConnection = check.verifyConnection
	applyOptions(cfg, SideClient, opts)
	return cfg
}

// PeerID returns the SPIFFE ID of the peer of a connection made with a
// configuration from [ServerConfig] or [ClientConfig] (for an HTTP
// handler, r.TLS). The peer's SVID was verified and authorized during the
// handshake; PeerID only reads the ID.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: connection has no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer certificate: %w", err)
	}
	return id, nil
}

// noSVID is the source used in place of a nil one: it has no SVID to give.
type noSVID struct{}

func (noSVID) GetX509SVID() (*x509svid.SVID, error) {
	return nil, errors.New("mtls: no X.509-SVID source configured")
}

func orNoSVID(s x509svid.Source) x509svid.Source {
	if s == nil {
		return noSVID{}
	}
	return s
}
