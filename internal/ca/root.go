package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Root file names written by WriteRootFiles.
const (
	RootCertFileName = "root.crt"
	RootKeyFileName  = "root.key"
)

// maxRootTTL bounds a root's lifetime.
const maxRootTTL = 20 * 365 * 24 * time.Hour

// InitRoot creates a root CA for td: an ECDSA P-256 key and a self-signed
// certificate valid for ttl, name-constrained to URIs of the trust domain
// and allowed one intermediate below it.
func InitRoot(td spiffeid.TrustDomain, ttl time.Duration) (*x509.Certificate, crypto.Signer, error) {
	return initRootAt(td, ttl, time.Now())
}

func initRootAt(td spiffeid.TrustDomain, ttl time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if td.IsZero() {
		return nil, nil, fmt.Errorf("root: %w: trust domain is required", ErrInvalid)
	}
	if ttl <= 0 || ttl > maxRootTTL {
		return nil, nil, fmt.Errorf("root: %w: lifetime %s out of range (0, %s]", ErrInvalid, ttl, maxRootTTL)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("root key: %w", err)
	}
	cert, err := selfSignRoot(td, key, ttl, now)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// selfSignRoot makes the self-signed root certificate of key.
func selfSignRoot(td spiffeid.TrustDomain, key crypto.Signer, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:                randomSerial(),
		Subject:                     pkix.Name{CommonName: "Bulwark root CA " + td.Name(), Organization: []string{"Bulwark"}},
		NotBefore:                   now.Add(-time.Minute),
		NotAfter:                    now.Add(ttl),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  1,
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	return cert, nil
}

// checkRoot verifies that cert is a CA certificate for td, valid at now,
// whose public key is key's.
func checkRoot(td spiffeid.TrustDomain, cert *x509.Certificate, key crypto.Signer, now time.Time) error {
	switch {
	case cert == nil || key == nil:
		return fmt.Errorf("%w: root certificate and key are both required", ErrInvalid)
	case !publicKeyMatches(cert, key):
		return fmt.Errorf("%w: root key does not match the root certificate", ErrInvalid)
	}
	return checkRootCert(td, cert, now)
}

// checkRootCert verifies that cert is a CA certificate for td, valid at now.
func checkRootCert(td spiffeid.TrustDomain, cert *x509.Certificate, now time.Time) error {
	switch {
	case cert == nil:
		return fmt.Errorf("%w: root certificate is required", ErrInvalid)
	case !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("%w: root certificate is not a CA that may sign certificates", ErrInvalid)
	case now.Before(cert.NotBefore) || !now.Before(cert.NotAfter):
		return fmt.Errorf("%w: root certificate is not valid now (valid %s to %s)", ErrInvalid,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	case len(cert.PermittedURIDomains) > 0 && !slices.Contains(cert.PermittedURIDomains, td.Name()):
		return fmt.Errorf("%w: root certificate's name constraints exclude trust domain %s", ErrInvalid, td.Name())
	}
	return nil
}

// WriteRootFiles writes the root certificate (0644) and its PKCS#8 key
// (0600) as PEM into dir, refusing to overwrite existing files. It returns
// the two paths.
func WriteRootFiles(dir string, cert *x509.Certificate, key crypto.Signer) (certFile, keyFile string, err error) {
	if cert == nil || key == nil {
		return "", "", fmt.Errorf("write root: %w: certificate and key are required", ErrInvalid)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("write root: marshal key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("write root: %w", err)
	}
	certFile, keyFile = filepath.Join(dir, RootCertFileName), filepath.Join(dir, RootKeyFileName)
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		_ = os.Remove(keyFile)
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeNew creates path with data, failing if it exists.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadRoot reads a root certificate and its private key from PEM files
// and checks that they belong together and that the certificate is a CA.
func LoadRoot(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("root certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("root certificate %s: %w: no PEM CERTIFICATE block", certFile, ErrInvalid)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("root certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("root key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("root key %s: %w: no PEM block", keyFile, ErrInvalid)
	}
	var k any
	switch kb.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, nil, fmt.Errorf("root key %s: %w: unsupported PEM type %q", keyFile, ErrInvalid, kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("root key %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("root key %s: %w: not a signing key", keyFile, ErrInvalid)
	}
	if !cert.IsCA || !publicKeyMatches(cert, signer) {
		return nil, nil, fmt.Errorf("root %s, %s: %w: not a CA certificate with this key", certFile, keyFile, ErrInvalid)
	}
	return cert, signer, nil
}

// newIntermediateCert creates an intermediate signing certificate and key
// under root, name-constrained to the trust domain and unable to sign
// further CAs.
func newIntermediateCert(td spiffeid.TrustDomain, root crypto.Signer, rootCert *x509.Certificate, ttl time.Duration, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("intermediate key: %w", err)
	}
	cert, err := signIntermediate(td, root, rootCert, key.Public(), ttl, now)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// signIntermediate signs the intermediate certificate of pub under root.
func signIntermediate(td spiffeid.TrustDomain, root crypto.Signer, rootCert *x509.Certificate, pub crypto.PublicKey, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	notAfter := now.Add(ttl)
	if notAfter.After(rootCert.NotAfter) {
		notAfter = rootCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:                randomSerial(),
		Subject:                     pkix.Name{CommonName: "Bulwark intermediate CA " + td.Name(), Organization: []string{"Bulwark"}},
		NotBefore:                   now.Add(-time.Minute),
		NotAfter:                    notAfter,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true,
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, pub, root)
	if err != nil {
		return nil, fmt.Errorf("intermediate certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("intermediate certificate: %w", err)
	}
	if err := cert.CheckSignatureFrom(rootCert); err != nil {
		return nil, fmt.Errorf("intermediate certificate does not verify under the root: %w", err)
	}
	return cert, nil
}
