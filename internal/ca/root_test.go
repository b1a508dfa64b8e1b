package ca

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestInitRoot(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.test")
	cert, key, err := InitRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || cert.MaxPathLen != 1 || cert.KeyUsage&x509.KeyUsageCertSign == 0 ||
		len(cert.PermittedURIDomains) != 1 || cert.PermittedURIDomains[0] != "example.test" || !cert.PermittedDNSDomainsCritical {
		t.Fatalf("root: CA %v, MaxPathLen %d, URI constraints %v", cert.IsCA, cert.MaxPathLen, cert.PermittedURIDomains)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{0, -time.Hour, 100 * 365 * 24 * time.Hour} {
		if _, _, err := InitRoot(td, ttl); !errors.Is(err, ErrInvalid) {
			t.Fatalf("TTL %v: %v; want ErrInvalid", ttl, err)
		}
	}
	if _, _, err := InitRoot(spiffeid.TrustDomain{}, time.Hour); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no trust domain: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "root")
	certFile, keyFile, err := WriteRootFiles(dir, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	gotCert, gotKey, err := LoadRoot(certFile, keyFile)
	if err != nil || !gotCert.Equal(cert) || !publicKeyMatches(cert, gotKey) {
		t.Fatalf("LoadRoot: %v", err)
	}
	if _, _, err := WriteRootFiles(dir, cert, key); err == nil {
		t.Fatal("WriteRootFiles overwrote an existing root")
	}
	// A key that is not the certificate's is refused.
	_, otherKey, err := InitRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyFile, err := WriteRootFiles(filepath.Join(t.TempDir(), "other"), cert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadRoot(certFile, otherKeyFile); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mismatched key: %v; want ErrInvalid", err)
	}
	if _, _, err := LoadRoot(keyFile, keyFile); !errors.Is(err, ErrInvalid) {
		t.Fatalf("key as certificate: %v; want ErrInvalid", err)
	}
}

// TestNameConstraintsConfineTheIntermediate: even with the intermediate's
// key, an attacker cannot mint a certificate for another trust domain
// that verifies against the bundle.
func TestNameConstraintsConfineTheIntermediate(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.test")
	rootCert, rootKey, err := InitRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	inter, interKey, err := newIntermediateCert(td, rootKey, rootCert, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(uri string) []*x509.Certificate {
		u, _ := url.Parse(uri)
		tmpl := &x509.Certificate{SerialNumber: randomSerial128(), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u}}
		k := newP256(t)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, k.Public(), interKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return []*x509.Certificate{c, inter}
	}
	evil := spiffeid.RequireTrustDomainFromString("evil.test")
	for name, tc := range map[string]struct {
		uri    string
		bundle *x509bundle.Bundle
		ok     bool
	}{
		"own trust domain":     {"spiffe://example.test/ns/a/sa/b", x509bundle.FromX509Authorities(td, []*x509.Certificate{inter}), true},
		"another trust domain": {"spiffe://evil.test/ns/a/sa/b", x509bundle.FromX509Authorities(evil, []*x509.Certificate{inter}), false},
		"rooted at the root":   {"spiffe://evil.test/ns/a/sa/b", x509bundle.FromX509Authorities(evil, []*x509.Certificate{rootCert}), false},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := x509svid.Verify(mint(tc.uri), tc.bundle)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify err = %v; want ok=%v", err, tc.ok)
			}
		})
	}
}
