package ca

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestCheckCSRAcceptsGoodKeys(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.test/ns/a/sa/b")
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.String())
	for name, der := range map[string][]byte{
		"P-256":           csrFor(t, newP256(t), nil),
		"Ed25519":         csrFor(t, ed, nil),
		"own ID as SAN":   csrFor(t, newP256(t), &x509.CertificateRequest{URIs: []*url.URL{u}}),
		"subject ignored": csrFor(t, newP256(t), &x509.CertificateRequest{}),
	} {
		if _, err := checkCSR(der, id); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func edKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func FuzzCheckCSR(f *testing.F) {
	id := spiffeid.RequireFromString("spiffe://example.test/ns/a/sa/b")
	k := newP256(f)
	u, _ := url.Parse(id.String())
	other, _ := url.Parse("spiffe://example.test/ns/a/sa/c")
	f.Add(csrFor(f, k, nil))
	f.Add(csrFor(f, k, &x509.CertificateRequest{URIs: []*url.URL{u}}))
	f.Add(csrFor(f, k, &x509.CertificateRequest{URIs: []*url.URL{other}}))
	f.Add(csrFor(f, k, &x509.CertificateRequest{DNSNames: []string{"x"}}))
	f.Add(corrupt(csrFor(f, k, nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := checkCSR(der, id)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Whatever passes is a well-signed request with an accepted key
		// and no SAN other than id.
		csr, perr := x509.ParseCertificateRequest(der)
		if perr != nil || csr.CheckSignature() != nil || checkPublicKey(pub) != nil {
			t.Fatalf("accepted a bad CSR: %v", perr)
		}
		if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 || len(csr.URIs) > 1 ||
			(len(csr.URIs) == 1 && csr.URIs[0].String() != id.String()) {
			t.Fatal("accepted a CSR with foreign SANs")
		}
	})
}
