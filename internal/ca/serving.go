// Package ca is Bulwark's certificate authority. This first part issues the
// control plane's own TLS serving certificate when no certificate files are
// configured: a local CA whose key stays sealed in the keystore signs a
// short-lived serving certificate at each start. Workload SVIDs, the trust
// bundle, rotation and revocation build on it.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/bulwarksec/bulwark/internal/devinfo"
)

// KeyStore is where the CA key is sealed (satisfied by *keys.Sealed).
type KeyStore interface {
	LoadOrCreate(name string, gen func() ([]byte, error)) ([]byte, error)
}

const (
	localCAKeyName  = "tls-local-ca"
	localCAValidity = 5 * 365 * 24 * time.Hour
	servingValidity = 7 * 24 * time.Hour
)

// ServingCert is a TLS serving certificate and the CA that clients must
// trust to accept it.
type ServingCert struct {
	Certificate tls.Certificate
	CAFile      string // PEM file of the issuing CA, for clients
	CA          *x509.Certificate
}

// LocalServing returns a serving certificate for hosts (DNS names or IP
// addresses), issued by a local CA. The CA key is created on first use and
// sealed in ks; the CA certificate is written (public, 0644) to caFile and
// reused while it is valid. The serving key is new at every call and never
// leaves memory.
func LocalServing(ks KeyStore, caFile string, hosts []string, now time.Time) (*ServingCert, error) {
	caKeyDER, err := ks.LoadOrCreate(localCAKeyName, func() ([]byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKCS8PrivateKey(k)
	})
	if err != nil {
		return nil, fmt.Errorf("local CA key: %w", err)
	}
	caKeyAny, err := x509.ParsePKCS8PrivateKey(caKeyDER)
	if err != nil {
		return nil, fmt.Errorf("local CA key: %w", err)
	}
	caKey, ok := caKeyAny.(crypto.Signer)
	if !ok {
		return nil, errors.New("local CA key: not a signing key")
	}
	caCert, err := loadOrCreateCACert(caFile, caKey, now)
	if err != nil {
		return nil, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "bulwark control plane"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     minTime(now.Add(servingValidity), caCert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, leafKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("issue serving certificate: %w", err)
	}
	return &ServingCert{
		Certificate: tls.Certificate{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: leafKey},
		CAFile:      caFile,
		CA:          caCert,
	}, nil
}

func loadOrCreateCACert(caFile string, key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	if b, err := os.ReadFile(caFile); err == nil {
		block, _ := pem.Decode(b)
		if block != nil && block.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(block.Bytes)
			if err == nil && c.IsCA && now.Add(servingValidity).Before(c.NotAfter) && publicKeyMatches(c, key) {
				return c, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read local CA certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Bulwark local CA", Organization: []string{"Bulwark"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(localCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create local CA certificate: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(caFile), 0o755); err != nil {
		return nil, fmt.Errorf("write local CA certificate: %w", err)
	}
	if err := devinfo.WriteFileAtomic(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func publicKeyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
