package mtls

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Side says which end of a connection refused the other.
type Side string

// The sides of a connection.
const (
	SideServer Side = "server"
	SideClient Side = "client"
)

// Refusal describes a peer refused during a handshake: its certificate did
// not verify against the trust bundle (another CA, expired, not an SVID),
// or the Authorizer refused its SPIFFE ID, or a resumed session no longer
// passed the checks.
type Refusal struct {
	// Side is the end that refused.
	Side Side
	// PeerID is the SPIFFE ID the peer's leaf certificate claims, when it
	// has one. It is what the peer claimed, not a verified identity.
	PeerID spiffeid.ID
	// Serial is the peer leaf certificate's serial number (hex), if any.
	Serial string
	// Resumed is true for a refused session resumption.
	Resumed bool
	// Err says why.
	Err error
}

// Option adjusts a configuration made by [ServerConfig] or [ClientConfig].
type Option func(*options)

type options struct {
	onRefusal func(Refusal)
}

// WithRefusalHook calls hook for every peer the configuration refuses, from
// the handshake's goroutine; it must not block for long. Services use it to
// audit refusals (a certificate from another CA, an expired certificate, an
// unauthorized SPIFFE ID).
func WithRefusalHook(hook func(Refusal)) Option {
	return func(o *options) { o.onRefusal = hook }
}

func applyOptions(cfg *tls.Config, side Side, opts []Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.onRefusal == nil {
		return
	}
	hook := o.onRefusal
	if verify := cfg.VerifyPeerCertificate; verify != nil {
		cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			err := verify(raw, chains)
			if err != nil {
				hook(refusalOf(side, rawLeaf(raw), false, err))
			}
			return err
		}
	}
	if verify := cfg.VerifyConnection; verify != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				var leaf *x509.Certificate
				if len(cs.PeerCertificates) > 0 {
					leaf = cs.PeerCertificates[0]
				}
				hook(refusalOf(side, leaf, cs.DidResume, err))
			}
			return err
		}
	}
}

func rawLeaf(raw [][]byte) *x509.Certificate {
	if len(raw) == 0 {
		return nil
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil
	}
	return c
}

func refusalOf(side Side, leaf *x509.Certificate, resumed bool, err error) Refusal {
	r := Refusal{Side: side, Resumed: resumed, Err: err}
	if leaf != nil {
		r.Serial = leaf.SerialNumber.Text(16)
		if id, idErr := x509svid.IDFromCert(leaf); idErr == nil {
			r.PeerID = id
		}
	}
	return r
}
