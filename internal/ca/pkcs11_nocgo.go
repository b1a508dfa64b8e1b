//go:build !cgo

package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var errNoPKCS11 = errors.New("pkcs11: this build has no PKCS#11 support (it needs cgo)")

// PKCS11Root is a root key held in a PKCS#11 token; unavailable without cgo.
type PKCS11Root struct{}

// Signer is the root key (never reached without cgo).
func (r *PKCS11Root) Signer() crypto.Signer { return nil }

// Close ends the session with the token.
func (r *PKCS11Root) Close() error { return nil }

// InitPKCS11Root needs a cgo build.
func InitPKCS11Root(spiffeid.TrustDomain, time.Duration, PKCS11Config) (*x509.Certificate, error) {
	return nil, errNoPKCS11
}

// OpenPKCS11Root needs a cgo build.
func OpenPKCS11Root(PKCS11Config, *x509.Certificate) (*PKCS11Root, error) {
	return nil, errNoPKCS11
}
