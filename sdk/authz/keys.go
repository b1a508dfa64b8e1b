package authz

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// BundleKeysPath is the control plane's list of bundle-signing public keys,
// one per replica.
const BundleKeysPath = "/v1/policy/bundle/keys"

// MaxBundleKeysBytes bounds the keys document.
const MaxBundleKeysBytes = 64 << 10

// FetchTrustedKeys reads the bundle-signing keys from the control plane at
// baseURL through hc, which must verify the control plane's certificate
// (and present the caller's, where it is required): the keys are pinned
// from this answer, so the channel is what makes them trustworthy. It
// returns the keys and the document, which a caller may keep to pin them
// across restarts (DecodeTrustedKeys reads it back).
func FetchTrustedKeys(ctx context.Context, hc *http.Client, baseURL string) ([]ed25519.PublicKey, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+BundleKeysPath, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("policy bundle keys: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("policy bundle keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("policy bundle keys: status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleKeysBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("policy bundle keys: %w", err)
	}
	if len(data) > MaxBundleKeysBytes {
		return nil, nil, fmt.Errorf("policy bundle keys: document larger than %d bytes", MaxBundleKeysBytes)
	}
	keys, err := DecodeTrustedKeys(data)
	if err != nil {
		return nil, nil, err
	}
	return keys, data, nil
}

// DecodeTrustedKeys parses a keys document ({"keys":[{"key_id",
// "public_key"}]}, public keys in base64url) into Ed25519 keys; a document
// with no key is an error.
func DecodeTrustedKeys(data []byte) ([]ed25519.PublicKey, error) {
	var doc struct {
		Keys []struct {
			KeyID     string `json:"key_id"`
			PublicKey string `json:"public_key"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("policy bundle keys: %w", err)
	}
	out := make([]ed25519.PublicKey, 0, len(doc.Keys))
	for _, k := range doc.Keys {
		raw, err := base64.RawURLEncoding.DecodeString(k.PublicKey)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("policy bundle key %q: not a base64url Ed25519 public key", k.KeyID)
		}
		out = append(out, ed25519.PublicKey(raw))
	}
	if len(out) == 0 {
		return nil, errors.New("policy bundle keys: the control plane published none")
	}
	return out, nil
}
