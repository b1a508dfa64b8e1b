package mtls

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// maxVerified bounds the memory of verified chains of a configuration;
// when full it is emptied and refills from the next handshakes.
const maxVerified = 4096

// peerCheck verifies and authorizes the peers of one configuration. It
// remembers, by a hash of the leaf certificate, the chains it has seen
// verify: the SPIFFE ID, the bundle authority the chain verified to and the
// period in which every certificate of the verified path is valid. A
// resumed session is re-checked against that memory, without signature
// verification: it passes only while the authority is still in the current
// bundle of the ID's trust domain and the current time is inside the
// period, which is exactly when verification would pass again. Otherwise
// the chain is verified in full. Authorization is never remembered: the
// Authorizer is asked every time.
type peerCheck struct {
	bundles x509bundle.Source
	authz   Authorizer
	now     func() time.Time

	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedPath
}

type verifiedPath struct {
	id                  spiffeid.ID
	anchor              *x509.Certificate
	notBefore, notAfter time.Time
}

func newPeerCheck(bundles x509bundle.Source, authz Authorizer) *peerCheck {
	return &peerCheck{bundles: bundles, authz: authz, now: time.Now, verified: map[[sha256.Size]byte]verifiedPath{}}
}

// tlsconfig is the authorizer given to go-spiffe for full handshakes: it
// remembers the chain go-spiffe verified, then authorizes.
func (p *peerCheck) tlsconfig() tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		p.remember(id, chains)
		return p.authz.authorize(id)
	}
}

func (p *peerCheck) remember(id spiffeid.ID, chains [][]*x509.Certificate) {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return
	}
	path := chains[0]
	v := verifiedPath{id: id, anchor: path[len(path)-1], notBefore: path[0].NotBefore, notAfter: path[0].NotAfter}
	for _, c := range path[1:] {
		if c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
	}
	key := sha256.Sum256(path[0].Raw)
	p.mu.Lock()
	if len(p.verified) >= maxVerified {
		clear(p.verified)
	}
	p.verified[key] = v
	p.mu.Unlock()
}

// recheck verifies the peer of a resumed session, whose leaf is leafDER and
// whose chain parse returns, and authorizes it.
func (p *peerCheck) recheck(leafDER []byte, parse func() ([]*x509.Certificate, error)) error {
	if p.bundles == nil {
		return errors.New("no trust bundle source")
	}
	now := p.now()
	p.mu.Lock()
	v, ok := p.verified[sha256.Sum256(leafDER)]
	p.mu.Unlock()
	if ok && !now.Before(v.notBefore) && !now.After(v.notAfter) {
		if b, err := p.bundles.GetX509BundleForTrustDomain(v.id.TrustDomain()); err == nil && b.HasX509Authority(v.anchor) {
			return p.authz.authorize(v.id)
		}
	}
	chain, err := parse()
	if err != nil {
		return err
	}
	id, chains, err := x509svid.Verify(chain, p.bundles, x509svid.WithTime(now))
	if err != nil {
		return err
	}
	p.remember(id, chains)
	return p.authz.authorize(id)
}

// verifyConnection is the VerifyConnection callback. crypto/tls calls it
// after every handshake, full or resumed, whereas go-spiffe's
// VerifyPeerCertificate runs on full handshakes only. On a resumed session
// it re-checks the peer, so a ticket never outlives a change of bundle,
// policy or identity. (A server has already re-checked the ticket in
// UnwrapSession; this second check then costs a map lookup.)
func (p *peerCheck) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("mtls: peer presented no certificate")
	}
	if !cs.DidResume {
		return nil // verified and authorized by VerifyPeerCertificate
	}
	err := p.recheck(cs.PeerCertificates[0].Raw, func() ([]*x509.Certificate, error) { return cs.PeerCertificates, nil })
	if err != nil {
		return fmt.Errorf("mtls: resumed session: %w", err)
	}
	return nil
}

// peerChainPrefix marks the entries of a session ticket's Extra that hold
// the peer's certificate chain, one DER certificate each, leaf first.
var peerChainPrefix = []byte("bulwark-mtls-peer:")

// hookSessionTickets makes the server decide, before it resumes a session
// from a ticket, whether the peer the ticket was issued to is still
// trusted and authorized: the ticket carries the peer's chain, which is
// re-checked. If the check fails, the ticket is ignored and the handshake
// falls back to a full one, where the peer presents its current SVID (a
// peer whose SVID was renewed by a new intermediate is let in; one whose
// authorization was withdrawn is refused there). Without this a stale
// ticket would make every connection of that client fail until the
// ticket's certificate expired, since a TLS 1.3 client does not learn that
// the server rejected its resumed session until after its handshake.
//
// Tickets are encrypted and authenticated with cfg's session ticket keys
// (those of cfg, also when the configuration is cloned, as http.Server
// does).
func (p *peerCheck) hookSessionTickets(cfg *tls.Config) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		extra := ss.Extra[:0:0]
		for _, e := range ss.Extra {
			if !bytes.HasPrefix(e, peerChainPrefix) {
				extra = append(extra, e)
			}
		}
		for _, c := range cs.PeerCertificates {
			extra = append(extra, append(append([]byte{}, peerChainPrefix...), c.Raw...))
		}
		ss.Extra = extra
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, nil //nolint:nilerr // an unusable ticket means a full handshake, never a failed one
		}
		var ders [][]byte
		for _, e := range ss.Extra {
			if der, ok := bytes.CutPrefix(e, peerChainPrefix); ok {
				ders = append(ders, der)
			}
		}
		if len(ders) == 0 {
			return nil, nil
		}
		parse := func() ([]*x509.Certificate, error) {
			chain := make([]*x509.Certificate, 0, len(ders))
			for _, der := range ders {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return nil, fmt.Errorf("session ticket: %w", err)
				}
				chain = append(chain, c)
			}
			return chain, nil
		}
		if p.recheck(ders[0], parse) != nil {
			return nil, nil // see above
		}
		return ss, nil
	}
}
