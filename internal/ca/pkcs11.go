//go:build cgo

package ca

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// PKCS11Root is a root key held in a PKCS#11 token (an HSM): it signs
// intermediates without ever leaving the token. Close it when done.
type PKCS11Root struct {
	ctx    *crypto11.Context
	signer crypto.Signer
}

// Signer is the root key; its private part stays in the token.
func (r *PKCS11Root) Signer() crypto.Signer { return r.signer }

// Close ends the session with the token.
func (r *PKCS11Root) Close() error {
	if err := r.ctx.Close(); err != nil {
		return fmt.Errorf("pkcs11: close: %w", err)
	}
	return nil
}

func (c PKCS11Config) keyLabel() []byte {
	if c.KeyLabel == "" {
		return []byte(DefaultPKCS11KeyLabel)
	}
	return []byte(c.KeyLabel)
}

func configurePKCS11(c PKCS11Config) (*crypto11.Context, error) {
	if c.Module == "" || c.TokenLabel == "" {
		return nil, fmt.Errorf("pkcs11: %w: module path and token label are required", ErrInvalid)
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: c.Module, TokenLabel: c.TokenLabel, Pin: c.PIN})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: open token %q: %w", c.TokenLabel, err)
	}
	return ctx, nil
}

// InitPKCS11Root generates the root key (ECDSA P-256) inside the token,
// refusing if a key with the label exists, and self-signs the root
// certificate for td (see InitRoot). The certificate is public: store it
// with the CLI; the key never leaves the token.
func InitPKCS11Root(td spiffeid.TrustDomain, ttl time.Duration, c PKCS11Config) (*x509.Certificate, error) {
	if td.IsZero() {
		return nil, fmt.Errorf("pkcs11 root: %w: trust domain is required", ErrInvalid)
	}
	if ttl <= 0 || ttl > maxRootTTL {
		return nil, fmt.Errorf("pkcs11 root: %w: lifetime %s out of range (0, %s]", ErrInvalid, ttl, maxRootTTL)
	}
	ctx, err := configurePKCS11(c)
	if err != nil {
		return nil, err
	}
	defer ctx.Close()
	existing, err := ctx.FindKeyPairs(nil, c.keyLabel())
	if err != nil {
		return nil, fmt.Errorf("pkcs11 root: find key: %w", err)
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("pkcs11 root: %w: token already holds a key labelled %q", ErrInvalid, c.keyLabel())
	}
	id := []byte(randomHex(8))
	key, err := ctx.GenerateECDSAKeyPairWithLabel(id, c.keyLabel(), elliptic.P256())
	if err != nil {
		return nil, fmt.Errorf("pkcs11 root: generate key: %w", err)
	}
	cert, err := selfSignRoot(td, key, ttl, time.Now())
	if err != nil {
		return nil, fmt.Errorf("pkcs11 root: %w", err)
	}
	return cert, nil
}

// OpenPKCS11Root opens the token and finds the root key by label, and
// checks that it is the key of rootCert.
func OpenPKCS11Root(c PKCS11Config, rootCert *x509.Certificate) (*PKCS11Root, error) {
	if rootCert == nil {
		return nil, fmt.Errorf("pkcs11 root: %w: root certificate is required", ErrInvalid)
	}
	ctx, err := configurePKCS11(c)
	if err != nil {
		return nil, err
	}
	keys, err := ctx.FindKeyPairs(nil, c.keyLabel())
	switch {
	case err != nil:
	case len(keys) == 0:
		err = fmt.Errorf("%w: no key labelled %q in the token", ErrNotFound, c.keyLabel())
	case len(keys) > 1:
		err = fmt.Errorf("%w: %d keys labelled %q in the token", ErrInvalid, len(keys), c.keyLabel())
	case !publicKeyMatches(rootCert, keys[0]):
		err = fmt.Errorf("%w: the token's key is not the root certificate's", ErrInvalid)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pkcs11 root: %w", err), ctx.Close())
	}
	return &PKCS11Root{ctx: ctx, signer: keys[0]}, nil
}
