package mesh_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// tb is the part of testing.TB the CA helpers use, so that examples can
// use them too.
type tb interface {
	Helper()
	Fatal(args ...any)
}

// testCA is a tiny CA of the shape Bulwark's has: a root signs an
// intermediate, the intermediate is the trust bundle, and SVID chains are
// [leaf, intermediate].
type testCA struct {
	td  spiffeid.TrustDomain
	crt *x509.Certificate // the intermediate
	key crypto.Signer
}

func newKey(t tb) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t tb) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sign(t tb, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
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

func newCA(t tb, td string) *testCA {
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
	return &testCA{td: trust, crt: inter, key: interKey}
}

// bundle returns a new bundle that trusts the CA's intermediate.
func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.crt})
}

// svid issues an X.509-SVID for id (any URI, even of another trust domain)
// valid from notBefore to notAfter.
func (ca *testCA) svidAt(t tb, id string, notBefore, notAfter time.Time) *x509svid.SVID {
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
	}, ca.crt, key.Public(), ca.key)
	return &x509svid.SVID{
		ID:           spiffeid.RequireFromString(id),
		Certificates: []*x509.Certificate{leaf, ca.crt},
		PrivateKey:   key,
	}
}

func (ca *testCA) svid(t tb, id string) *x509svid.SVID {
	t.Helper()
	now := time.Now()
	return ca.svidAt(t, id, now.Add(-time.Minute), now.Add(time.Hour))
}

// staticSource serves one SVID and one trust bundle.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

func (ca *testCA) source(t tb, id string) staticSource {
	t.Helper()
	return staticSource{svid: ca.svid(t, id), bundle: ca.bundle()}
}
