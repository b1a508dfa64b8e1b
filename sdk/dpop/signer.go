package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// Signer makes DPoP proofs with one key. It is safe for concurrent use.
type Signer struct {
	alg        jose.SignatureAlgorithm
	signer     jose.Signer
	thumbprint string
	now        func() time.Time
}

// NewSigner returns a Signer for key: an Ed25519 key signs with EdDSA, an
// ECDSA P-256 key with ES256, and an RSA key of at least 2048 bits with
// PS256. Any crypto.Signer with such a public key works, including keys
// held in hardware.
func NewSigner(key crypto.Signer) (*Signer, error) {
	if key == nil {
		return nil, errors.New("dpop: signer needs a key")
	}
	var (
		alg    jose.SignatureAlgorithm
		native any = key
	)
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		alg = jose.EdDSA
		if k, ok := key.(ed25519.PrivateKey); ok {
			native = k
		} else if k, ok := key.(*ed25519.PrivateKey); ok {
			native = *k
		} else {
			native = cryptosigner.Opaque(key)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, errors.New("dpop: ECDSA keys must use curve P-256")
		}
		alg = jose.ES256
		if _, ok := key.(*ecdsa.PrivateKey); !ok {
			native = cryptosigner.Opaque(key)
		}
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("dpop: RSA keys must have at least %d bits", minRSABits)
		}
		alg = jose.PS256
		if _, ok := key.(*rsa.PrivateKey); !ok {
			native = pssSigner{key}
		}
	default:
		return nil, fmt.Errorf("dpop: unsupported key type %T", pub)
	}
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType(TokenType)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: native}, opts)
	if err != nil {
		return nil, fmt.Errorf("dpop: new signer: %w", err)
	}
	tp, err := Thumbprint(key.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{alg: alg, signer: signer, thumbprint: tp, now: time.Now}, nil
}

// Thumbprint returns the RFC 7638 thumbprint of the signer's public key:
// the value to send as dpop_jkt, and the cnf.jkt of tokens bound to it.
func (s *Signer) Thumbprint() string { return s.thumbprint }

// Algorithm returns the JWS algorithm the signer uses.
func (s *Signer) Algorithm() string { return string(s.alg) }

// Proof returns a DPoP proof for one request to url with method. nonce is
// the server's latest DPoP-Nonce, or "". accessToken, when set, is the
// access token sent with the request; the proof then carries its hash.
// The query and fragment of url are not part of the proof.
func (s *Signer) Proof(method, url, nonce, accessToken string) (string, error) {
	if method == "" {
		return "", errors.New("dpop: proof needs a method")
	}
	htu, err := stripQuery(url)
	if err != nil {
		return "", err
	}
	var id [16]byte
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return "", fmt.Errorf("dpop: jti: %w", err)
	}
	claims := struct {
		JTI   string `json:"jti"`
		HTM   string `json:"htm"`
		HTU   string `json:"htu"`
		IAT   int64  `json:"iat"`
		Nonce string `json:"nonce,omitempty"`
		ATH   string `json:"ath,omitempty"`
	}{
		JTI:   base64.RawURLEncoding.EncodeToString(id[:]),
		HTM:   method,
		HTU:   htu,
		IAT:   s.now().Unix(),
		Nonce: nonce,
	}
	if accessToken != "" {
		claims.ATH = AccessTokenHash(accessToken)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("dpop: encode claims: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dpop: sign proof: %w", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("dpop: serialize proof: %w", err)
	}
	return out, nil
}

// stripQuery checks that raw is an absolute http(s) URL and drops its
// query and fragment.
func stripQuery(raw string) (string, error) {
	if _, err := normalizeURL(raw); err != nil {
		return "", fmt.Errorf("dpop: proof URL: %w", err)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] == '?' || raw[i] == '#' {
			return raw[:i], nil
		}
	}
	return raw, nil
}

// pssSigner signs PS256 with an RSA crypto.Signer whose private key is not
// in memory, with the salt length JWA requires (equal to the hash size).
type pssSigner struct{ key crypto.Signer }

var _ jose.OpaqueSigner = pssSigner{}

func (p pssSigner) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: p.key.Public()}
}

func (p pssSigner) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{jose.PS256} }

func (p pssSigner) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != jose.PS256 {
		return nil, jose.ErrUnsupportedAlgorithm
	}
	digest := sha256.Sum256(payload)
	return p.key.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
}
