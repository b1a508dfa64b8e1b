package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// ErrInvalidProof is wrapped by every error Verify returns for a proof it
// refuses.
var ErrInvalidProof = errors.New("invalid DPoP proof")

// Limits and defaults of Verify.
const (
	// MaxProofSize is the longest proof Verify parses, in bytes.
	MaxProofSize = 8 << 10
	// MaxJTILength is the longest jti claim Verify accepts.
	MaxJTILength = 256
	// DefaultWindow is how far a proof's iat may be from the verifier's
	// clock, either way, when VerifyOptions.Window is zero.
	DefaultWindow = 60 * time.Second
	// TokenType is the typ header of a DPoP proof.
	TokenType = "dpop+jwt"
	// minRSABits is the smallest RSA key accepted.
	minRSABits = 2048
)

// DefaultAlgorithms are the signature algorithms Verify accepts when
// VerifyOptions.Algorithms is empty, and that Signer produces.
var DefaultAlgorithms = []string{string(jose.EdDSA), string(jose.ES256), string(jose.PS256)}

// asymmetric are the algorithms that may appear in an allow-list: only
// public-key signatures, never "none" or an HMAC.
var asymmetric = map[string]bool{
	string(jose.EdDSA): true,
	string(jose.ES256): true, string(jose.ES384): true, string(jose.ES512): true,
	string(jose.PS256): true, string(jose.PS384): true, string(jose.PS512): true,
	string(jose.RS256): true, string(jose.RS384): true, string(jose.RS512): true,
}

// Proof is a verified DPoP proof.
type Proof struct {
	// JTI is the proof's unique identifier. The verifier must refuse a
	// second proof with the same JTI (and Thumbprint) within the window.
	JTI string
	// HTM is the HTTP method the proof was made for.
	HTM string
	// HTU is the HTTP URL the proof was made for, as the client sent it.
	HTU string
	// Nonce is the server-provided nonce in the proof, or "".
	Nonce string
	// ATH is the access token hash in the proof, or "".
	ATH string
	// IssuedAt is the proof's iat.
	IssuedAt time.Time
	// Thumbprint is the RFC 7638 SHA-256 thumbprint of the proof's public
	// key, base64url without padding: the value of cnf.jkt in a token
	// bound to that key.
	Thumbprint string
	// PublicKey is the proof's public key: ed25519.PublicKey,
	// *ecdsa.PublicKey or *rsa.PublicKey.
	PublicKey crypto.PublicKey
}

// VerifyOptions is what a proof is checked against.
type VerifyOptions struct {
	// Method is the HTTP method of the request (required).
	Method string
	// URL is the request's URL as the client addressed it (required):
	// scheme, host and path are compared after RFC 3986 normalization;
	// query and fragment are ignored.
	URL string
	// Now is the verifier's time; zero means time.Now().
	Now time.Time
	// Window is how far iat may be from Now, either way; zero means
	// DefaultWindow.
	Window time.Duration
	// AccessToken, when set, is the access token the proof accompanies:
	// the proof must carry its hash in ath.
	AccessToken string
	// Algorithms are the signature algorithms accepted; empty means
	// DefaultAlgorithms. "none" and HMAC algorithms are an error.
	Algorithms []string
}

// proofClaims are the claims of a proof as sent.
type proofClaims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	Nonce string   `json:"nonce"`
	ATH   string   `json:"ath"`
}

// Verify checks a DPoP proof (the value of the DPoP request header) against
// opts and returns it. It does not detect replay: the caller must remember
// Proof.JTI for the window and refuse it the second time.
func Verify(proof string, opts VerifyOptions) (*Proof, error) {
	algs, err := allowList(opts.Algorithms)
	if err != nil {
		return nil, err
	}
	if opts.Method == "" || opts.URL == "" {
		return nil, errors.New("dpop: verify options need the request method and URL")
	}
	wantURL, err := normalizeURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("dpop: request URL: %w", err)
	}
	if err := checkCompact(proof); err != nil {
		return nil, invalid("%s", err)
	}
	if err := checkHeader(proof[:strings.IndexByte(proof, '.')]); err != nil {
		return nil, invalid("%s", err)
	}
	jws, err := jose.ParseSignedCompact(proof, algs)
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return nil, invalid("algorithm is not allowed")
		}
		return nil, invalid("malformed JWS")
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("want exactly one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, TokenType) {
		return nil, invalid("typ must be %s", TokenType)
	}
	jwk := h.JSONWebKey
	if jwk == nil {
		return nil, invalid("jwk header is missing")
	}
	if !jwk.Valid() || !jwk.IsPublic() {
		return nil, invalid("jwk header must be a public key")
	}
	if !keyFits(h.Algorithm, jwk.Key) || (jwk.Algorithm != "" && jwk.Algorithm != h.Algorithm) {
		return nil, invalid("jwk does not fit the algorithm")
	}
	payload, err := jws.Verify(jwk)
	if err != nil {
		return nil, invalid("signature does not verify")
	}
	var c proofClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalid("claims are not a valid JSON object")
	}
	p, err := checkClaims(&c, opts, wantURL)
	if err != nil {
		return nil, err
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, invalid("jwk thumbprint: %s", err)
	}
	p.Thumbprint = base64.RawURLEncoding.EncodeToString(tp)
	p.PublicKey = jwk.Key
	return p, nil
}

// checkClaims checks a proof's claims against opts.
func checkClaims(c *proofClaims, opts VerifyOptions, wantURL string) (*Proof, error) {
	switch {
	case c.JTI == "":
		return nil, invalid("jti is missing")
	case len(c.JTI) > MaxJTILength:
		return nil, invalid("jti is too long")
	case c.HTM == "":
		return nil, invalid("htm is missing")
	case c.HTU == "":
		return nil, invalid("htu is missing")
	case c.IAT == nil:
		return nil, invalid("iat is missing")
	}
	if c.HTM != opts.Method {
		return nil, invalid("htm does not match the request method")
	}
	gotURL, err := normalizeURL(c.HTU)
	if err != nil || gotURL != wantURL {
		return nil, invalid("htu does not match the request URL")
	}
	iat, ok := numericDate(*c.IAT)
	if !ok {
		return nil, invalid("iat is not a valid time")
	}
	now, window := opts.Now, opts.Window
	if now.IsZero() {
		now = time.Now()
	}
	if window <= 0 {
		window = DefaultWindow
	}
	if iat.Before(now.Add(-window)) || iat.After(now.Add(window)) {
		return nil, invalid("iat is outside the acceptable window")
	}
	if opts.AccessToken != "" {
		want := AccessTokenHash(opts.AccessToken)
		if c.ATH == "" {
			return nil, invalid("ath is missing")
		}
		if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(want)) != 1 {
			return nil, invalid("ath does not match the access token")
		}
	}
	return &Proof{JTI: c.JTI, HTM: c.HTM, HTU: c.HTU, Nonce: c.Nonce, ATH: c.ATH, IssuedAt: iat}, nil
}

// AccessTokenHash is the ath value for an access token: the base64url
// (unpadded) SHA-256 of its ASCII bytes.
func AccessTokenHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of a public key,
// base64url without padding, as it appears in cnf.jkt.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return "", fmt.Errorf("dpop: thumbprint of unsupported key type %T", pub)
	}
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("dpop: thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidProof, fmt.Sprintf(format, args...))
}

// allowList resolves the configured algorithms, refusing any that is not
// an asymmetric signature algorithm.
func allowList(configured []string) ([]jose.SignatureAlgorithm, error) {
	if len(configured) == 0 {
		configured = DefaultAlgorithms
	}
	out := make([]jose.SignatureAlgorithm, 0, len(configured))
	for _, a := range configured {
		if !asymmetric[a] {
			return nil, fmt.Errorf("dpop: algorithm %q is not an allowed asymmetric signature algorithm", a)
		}
		out = append(out, jose.SignatureAlgorithm(a))
	}
	return out, nil
}

// keyFits reports whether key is of the type and size that alg needs.
func keyFits(alg string, key any) bool {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	case *ecdsa.PublicKey:
		switch alg {
		case string(jose.ES256):
			return k.Curve == elliptic.P256()
		case string(jose.ES384):
			return k.Curve == elliptic.P384()
		case string(jose.ES512):
			return k.Curve == elliptic.P521()
		}
	case *rsa.PublicKey:
		return (strings.HasPrefix(alg, "PS") || strings.HasPrefix(alg, "RS")) && k.N.BitLen() >= minRSABits
	}
	return false
}

// checkCompact checks the shape of a compact JWS before any parsing: a
// bounded size, exactly three segments, and base64url characters only.
func checkCompact(s string) error {
	switch {
	case s == "":
		return errors.New("proof is empty")
	case len(s) > MaxProofSize:
		return errors.New("proof is too large")
	case strings.Count(s, ".") != 2:
		return errors.New("proof is not a compact JWS")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && !isBase64URL(c) {
			return errors.New("proof holds a character outside base64url")
		}
	}
	return nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// numericDate converts a JWT NumericDate to a time, refusing values that
// are negative, not finite or absurdly far in the future.
func numericDate(f float64) (time.Time, bool) {
	if math.IsNaN(f) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}
