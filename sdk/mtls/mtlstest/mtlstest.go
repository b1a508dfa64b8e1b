// Package mtlstest is a throwaway SPIFFE certificate authority for tests
// of code that uses sdk/mtls: a root signs a name-constrained
// intermediate, the intermediate is the trust bundle, and X.509-SVID
// chains are [leaf, intermediate] — the shape of Bulwark's own CA. Keys
// are generated per CA and never leave the process.
package mtlstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TB is the part of testing.TB the helpers use, so that examples can use
// them too.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// CA is a test certificate authority for one trust domain.
type CA struct {
	// TrustDomain is the CA's trust domain.
	TrustDomain spiffeid.TrustDomain
	// Intermediate is the certificate that signs SVIDs: the trust bundle.
	Intermediate *x509.Certificate
	key          crypto.Signer
}

// NewCA returns a CA for trust domain td, valid from an hour ago for a day.
func NewCA(t TB, td string) *CA {
	t.Helper()
	trust := spiffeid.RequireTrustDomainFromString(td)
	now := time.Now()
	rootKey, interKey := newKey(t), newKey(t)
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          serial(t),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			PermittedURIDomains:   []string{trust.Name()},
		}
	}
	root := caTmpl("root")
	root = sign(t, root, root, rootKey.Public(), rootKey)
	inter := caTmpl("intermediate")
	inter.MaxPathLenZero = true
	inter = sign(t, inter, root, interKey.Public(), rootKey)
	return &CA{TrustDomain: trust, Intermediate: inter, key: interKey}
}

// Bundle returns a new bundle that trusts the CA's intermediate.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Intermediate})
}

// SVIDAt issues an X.509-SVID for id (any URI, even of another trust
// domain) valid from notBefore to notAfter.
func (ca *CA) SVIDAt(t TB, id string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	leaf := sign(t, &x509.Certificate{
		SerialNumber: serial(t),
		URIs:         []*url.URL{u},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.Intermediate, key.Public(), ca.key)
	return &x509svid.SVID{
		ID:           spiffeid.RequireFromString(id),
		Certificates: []*x509.Certificate{leaf, ca.Intermediate},
		PrivateKey:   key,
	}
}

// SVID issues an X.509-SVID for id valid from a minute ago for an hour.
func (ca *CA) SVID(t TB, id string) *x509svid.SVID {
	t.Helper()
	now := time.Now()
	return ca.SVIDAt(t, id, now.Add(-time.Minute), now.Add(time.Hour))
}

func newKey(t TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sign(t TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
