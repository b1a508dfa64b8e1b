package authz

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// BundleFormat names the bundle format; it is the first line of every
// signed message and the manifest's "format".
const BundleFormat = "bulwark-policy-bundle/v1"

// DefaultMaxBundleBytes bounds the size of a bundle accepted by [VerifyBundle]
// when no other limit is given.
const DefaultMaxBundleBytes = 32 << 20

// Errors of bundle verification. Every error of [VerifyBundle] wraps
// [ErrInvalidBundle], and one of the more specific ones where it applies.
var (
	ErrInvalidBundle = errors.New("invalid policy bundle")
	ErrUnknownKey    = errors.New("bundle signed by an untrusted key")
	ErrBadSignature  = errors.New("bundle signature does not verify")
	ErrDigest        = errors.New("bundle content does not match its manifest")
	ErrExpired       = errors.New("bundle expired")
)

// Bundle is the wire form of a signed policy bundle, as served by the
// control plane at GET /v1/policy/bundle: the policy set, the schema and
// the entity data enforcement points need, with a manifest that carries
// their SHA-256 digests and is signed with Ed25519.
type Bundle struct {
	// Manifest is the base64url (unpadded) encoding of the manifest's JSON:
	// exactly the bytes that were signed.
	Manifest string `json:"manifest"`
	// Signature is the base64url (unpadded) Ed25519 signature over
	// BundleFormat + "\n" + the manifest bytes.
	Signature string `json:"signature"`
	// Policies maps each policy file name to its Cedar text.
	Policies map[string]string `json:"policies"`
	// Schema is the Cedar schema (human-readable format).
	Schema string `json:"schema"`
	// Entities is a Cedar JSON entity array; its digest covers these
	// exact bytes.
	Entities json.RawMessage `json:"entities"`
}

// Manifest describes a bundle. Its Version increases with every bundle the
// control plane signs, so an enforcement point never goes back to an
// older one.
type Manifest struct {
	Format string `json:"format"`
	// Version is the bundle's monotonic version.
	Version int64 `json:"version"`
	// PolicyVersion is the version of the policy set the bundle carries.
	PolicyVersion int64 `json:"policy_version"`
	// EntitiesVersion is the version of the entity store the bundle carries.
	EntitiesVersion int64 `json:"entities_version"`
	// Issuer identifies the control plane that signed the bundle.
	Issuer    string    `json:"issuer"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// KeyID names the signing key (see [KeyID]).
	KeyID string `json:"key_id"`
	// Policies maps each policy file name to the hex SHA-256 of its text.
	Policies map[string]string `json:"policies"`
	// SchemaSHA256 and EntitiesSHA256 are the hex SHA-256 digests of the
	// schema text and of the entity JSON bytes.
	SchemaSHA256   string `json:"schema_sha256"`
	EntitiesSHA256 string `json:"entities_sha256"`
}

// KeyID returns the identifier of an Ed25519 bundle-signing public key:
// the first 16 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// BundleContent is what a bundle carries, before signing.
type BundleContent struct {
	Version         int64
	PolicyVersion   int64
	EntitiesVersion int64
	Issuer          string
	IssuedAt        time.Time
	ExpiresAt       time.Time
	Policies        map[string]string
	Schema          string
	// Entities is a Cedar JSON entity array.
	Entities json.RawMessage
}

// SignBundle builds the manifest of c and signs it with key. It is what the
// control plane does; enforcement points only verify.
func SignBundle(c BundleContent, key ed25519.PrivateKey) (*Bundle, error) {
	if c.Version <= 0 {
		return nil, fmt.Errorf("sign bundle: version must be positive, got %d", c.Version)
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return nil, errors.New("sign bundle: expiry must be after issuance")
	}
	entities := c.Entities
	if len(entities) == 0 {
		entities = json.RawMessage("[]")
	}
	m := Manifest{
		Format: BundleFormat, Version: c.Version, PolicyVersion: c.PolicyVersion, EntitiesVersion: c.EntitiesVersion,
		Issuer: c.Issuer, IssuedAt: c.IssuedAt.UTC().Truncate(time.Millisecond), ExpiresAt: c.ExpiresAt.UTC().Truncate(time.Millisecond),
		KeyID:          KeyID(key.Public().(ed25519.PublicKey)),
		Policies:       make(map[string]string, len(c.Policies)),
		SchemaSHA256:   digest([]byte(c.Schema)),
		EntitiesSHA256: digest(entities),
	}
	for name, text := range c.Policies {
		m.Policies[name] = digest([]byte(text))
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sign bundle: encode manifest: %w", err)
	}
	sig := ed25519.Sign(key, signedMessage(mb))
	return &Bundle{
		Manifest:  base64.RawURLEncoding.EncodeToString(mb),
		Signature: base64.RawURLEncoding.EncodeToString(sig),
		Policies:  maps.Clone(c.Policies),
		Schema:    c.Schema,
		Entities:  entities,
	}, nil
}

// VerifiedBundle is a bundle whose signature, digests and expiry checked out.
type VerifiedBundle struct {
	Manifest Manifest
	Policies map[string]string
	Schema   string
	Entities json.RawMessage
}

// VerifyBundle decodes raw (at most maxBytes; 0 means
// DefaultMaxBundleBytes), checks the signature against the trusted keys
// (by key ID), the digest of every part against the manifest, and that the
// bundle has not expired at now. Nothing of a bundle that fails is used.
func VerifyBundle(raw []byte, trusted map[string]ed25519.PublicKey, now time.Time, maxBytes int) (*VerifiedBundle, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBundleBytes
	}
	if len(raw) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrInvalidBundle, len(raw), maxBytes)
	}
	var b Bundle
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrInvalidBundle, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the bundle", ErrInvalidBundle)
	}
	mb, err := base64.RawURLEncoding.DecodeString(b.Manifest)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest is not base64url: %w", ErrInvalidBundle, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(b.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %w: malformed signature", ErrInvalidBundle, ErrBadSignature)
	}
	var m Manifest
	mdec := json.NewDecoder(bytes.NewReader(mb))
	mdec.DisallowUnknownFields()
	if err := mdec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: decode manifest: %w", ErrInvalidBundle, err)
	}
	pub, ok := trusted[m.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: %w: key %q", ErrInvalidBundle, ErrUnknownKey, m.KeyID)
	}
	if !ed25519.Verify(pub, signedMessage(mb), sig) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, ErrBadSignature)
	}
	// From here on the manifest is the control plane's own words.
	if m.Format != BundleFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrInvalidBundle, m.Format, BundleFormat)
	}
	if m.Version <= 0 {
		return nil, fmt.Errorf("%w: version %d is not positive", ErrInvalidBundle, m.Version)
	}
	if !now.Before(m.ExpiresAt) {
		return nil, fmt.Errorf("%w: %w at %s (version %d)", ErrInvalidBundle, ErrExpired, m.ExpiresAt.Format(time.RFC3339), m.Version)
	}
	if len(m.Policies) != len(b.Policies) {
		return nil, fmt.Errorf("%w: %w: %d policy files, manifest lists %d", ErrInvalidBundle, ErrDigest, len(b.Policies), len(m.Policies))
	}
	for _, name := range slices.Sorted(maps.Keys(b.Policies)) {
		want, ok := m.Policies[name]
		if !ok || digest([]byte(b.Policies[name])) != want {
			return nil, fmt.Errorf("%w: %w: policy file %q", ErrInvalidBundle, ErrDigest, name)
		}
	}
	if digest([]byte(b.Schema)) != m.SchemaSHA256 {
		return nil, fmt.Errorf("%w: %w: schema", ErrInvalidBundle, ErrDigest)
	}
	if digest(b.Entities) != m.EntitiesSHA256 {
		return nil, fmt.Errorf("%w: %w: entities", ErrInvalidBundle, ErrDigest)
	}
	return &VerifiedBundle{Manifest: m, Policies: b.Policies, Schema: b.Schema, Entities: b.Entities}, nil
}

func signedMessage(manifest []byte) []byte {
	msg := make([]byte, 0, len(BundleFormat)+1+len(manifest))
	msg = append(msg, BundleFormat...)
	msg = append(msg, '\n')
	return append(msg, manifest...)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
