package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxCSRBytes bounds the CSR a caller may send.
const maxCSRBytes = 16 << 10

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// maxRSABits bounds the RSA modulus accepted (bigger keys cost time to
// verify for no security benefit).
const maxRSABits = 8192

// checkCSR parses a DER certificate signing request for id and returns its
// public key. The request must be correctly self-signed; its key must be
// ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits; and it may
// carry no subject alternative name other than one URI equal to id. The
// subject is ignored. Every refusal wraps ErrInvalid.
func checkCSR(der []byte, id spiffeid.ID) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty CSR", ErrInvalid)
	}
	if len(der) > maxCSRBytes {
		return nil, fmt.Errorf("%w: CSR of %d bytes exceeds %d", ErrInvalid, len(der), maxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parse CSR: %w", ErrInvalid, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: CSR signature: %w", ErrInvalid, err)
	}
	switch {
	case len(csr.DNSNames) > 0:
		return nil, fmt.Errorf("%w: CSR asks for DNS names", ErrInvalid)
	case len(csr.IPAddresses) > 0:
		return nil, fmt.Errorf("%w: CSR asks for IP addresses", ErrInvalid)
	case len(csr.EmailAddresses) > 0:
		return nil, fmt.Errorf("%w: CSR asks for email addresses", ErrInvalid)
	case len(csr.URIs) > 1:
		return nil, fmt.Errorf("%w: CSR asks for %d URIs; at most one is allowed", ErrInvalid, len(csr.URIs))
	case len(csr.URIs) == 1 && csr.URIs[0].String() != id.String():
		return nil, fmt.Errorf("%w: CSR asks for a URI other than %s", ErrInvalid, id)
	}
	return csr.PublicKey, nil
}

// checkPublicKey refuses weak or unsupported key types.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s not accepted (P-256 or P-384)", ErrInvalid, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits not accepted (%d to %d)", ErrInvalid, n, minRSABits, maxRSABits)
		}
	default:
		return fmt.Errorf("%w: public key type %T not accepted", ErrInvalid, pub)
	}
	return nil
}
