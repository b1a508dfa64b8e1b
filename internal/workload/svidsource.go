package workload

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrNoSVID is wrapped by SVIDSource.GetX509SVID's error when the agent holds
// no usable SVID for the identity: none issued yet, expired, or its SPIFFE
// ID or serial is on the deny list.
var ErrNoSVID = errors.New("no usable SVID")

// SVIDSource serves the agent's current X.509-SVID for one SPIFFE ID and
// the agent's trust bundle, in-process: it is an x509svid.Source and an
// x509bundle.Source (what sdk/mtls and the mesh proxy take). Every call
// reads the agent's state afresh, so a rotated SVID is served at once and a
// denied or expired one never.
type SVIDSource struct {
	a  *Agent
	id spiffeid.ID
}

var (
	_ x509svid.Source   = (*SVIDSource)(nil)
	_ x509bundle.Source = (*SVIDSource)(nil)
)

// SVIDSource returns the source of the agent's SVID for id: the SVID of a
// registration entry for id assigned to this agent (the newest when there
// are several).
func (a *Agent) SVIDSource(id spiffeid.ID) *SVIDSource { return &SVIDSource{a: a, id: id} }

// ID returns the SPIFFE ID the source serves.
func (s *SVIDSource) ID() spiffeid.ID { return s.id }

// GetX509SVID returns the current SVID for the source's ID; it fails,
// wrapping ErrNoSVID, when the agent holds none that is valid now and not
// denied.
func (s *SVIDSource) GetX509SVID() (*x509svid.SVID, error) {
	a := s.a
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.deny.ids[s.id.String()] {
		return nil, fmt.Errorf("workload agent: %s: %w (the identity is denied)", s.id, ErrNoSVID)
	}
	var best *svid
	for _, sv := range a.st.svids {
		if sv.id != s.id || a.st.denied(sv.id, sv.serial()) {
			continue
		}
		leaf := sv.chain[0]
		if now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
			continue
		}
		if best == nil || leaf.NotAfter.After(best.chain[0].NotAfter) {
			best = sv
		}
	}
	if best == nil {
		return nil, fmt.Errorf("workload agent: %s: %w", s.id, ErrNoSVID)
	}
	return &x509svid.SVID{ID: best.id, Certificates: best.chain, PrivateKey: best.key}, nil
}

// GetX509BundleForTrustDomain returns the agent's trust bundle when td is
// the agent's trust domain.
func (s *SVIDSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, _ := s.a.bundleView()
	if b == nil {
		return nil, errors.New("workload agent: no trust bundle yet")
	}
	if b.TrustDomain() != td {
		return nil, fmt.Errorf("workload agent: no trust bundle for trust domain %q", td)
	}
	return x509bundle.FromX509Authorities(td, b.X509Authorities()), nil
}

// IsDenied reports whether id, or the certificate serial (hex, any case,
// optional colons), is on the deny list the agent follows: a peer the mesh
// proxy must refuse even though its certificate still verifies.
func (a *Agent) IsDenied(id spiffeid.ID, serial string) bool {
	serial = normalizeSerial(serial)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.denied(id, serial)
}

// ID returns the agent's own SPIFFE ID (spiffe://<td>/agent/<name>), or the
// zero ID before it has joined.
func (a *Agent) ID() spiffeid.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.agentID
}

// ControlPlaneTLS returns a TLS configuration for calling the control plane
// as the agent itself: it verifies the server with Config.ServerCAs (nil:
// the system roots) and presents the agent's current SVID, read at every
// handshake so that it follows rotation. The control plane accepts it
// wherever it accepts an X.509-SVID of the trust domain (ca.VerifyWorkload:
// the policy bundle, the service directory, audit events).
func (a *Agent) ControlPlaneTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    a.cfg.ServerCAs,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if !a.st.joined() {
				return nil, errors.New("workload agent: not joined yet")
			}
			cert := &tls.Certificate{PrivateKey: a.st.agentKey, Leaf: a.st.agentChain[0]}
			for _, c := range a.st.agentChain {
				cert.Certificate = append(cert.Certificate, c.Raw)
			}
			return cert, nil
		},
	}
}

// ControlPlaneClient returns an HTTP client that calls the control plane
// with the agent's own identity (see ControlPlaneTLS). Its idle connections
// last a minute, so a rotated agent SVID is presented soon after rotation.
func (a *Agent) ControlPlaneClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     a.ControlPlaneTLS(),
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     time.Minute,
			ForceAttemptHTTP2:   true,
		},
	}
}
