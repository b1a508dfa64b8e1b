package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// fetchKeys gets the bundle-signing keys from the control plane over the
// authenticated channel (its TLS certificate verified by the HTTP client).
func (n *Node) fetchKeys(ctx context.Context) ([]ed25519.PublicKey, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return authz.FetchTrustedKeys(ctx, n.deps.HTTPClient, n.cfg.ServerURL)
}

// trustedKeys returns the bundle-signing keys: fetched from the control
// plane (and pinned in CacheDir), or, while it is unreachable, the keys
// pinned by an earlier start. With neither it retries until ctx ends and
// then returns nil keys.
func (n *Node) trustedKeys(ctx context.Context) ([]ed25519.PublicKey, error) {
	pin := n.cachePath(keysPinFile)
	for attempt := 0; ; attempt++ {
		keys, data, err := n.fetchKeys(ctx)
		if err == nil {
			if pin != "" {
				if werr := writeFileAtomic(pin, data); werr != nil {
					n.log.Warn("mesh node: pin the policy bundle keys", logKeyError, werr)
				}
			}
			return keys, nil
		}
		if pin != "" {
			if data, rerr := os.ReadFile(pin); rerr == nil {
				keys, derr := authz.DecodeTrustedKeys(data)
				if derr != nil {
					return nil, fmt.Errorf("mesh node: pinned bundle keys %s: %w", pin, derr)
				}
				n.log.Warn("mesh node: control plane unreachable; using the pinned policy bundle keys", logKeyError, err)
				return keys, nil
			}
		}
		delay := retryDelay(attempt)
		n.log.Warn("mesh node: fetch the policy bundle keys; retrying", logKeyError, err, logKeyRetry, delay)
		if !sleep(ctx, delay) {
			return nil, nil
		}
	}
}

// policyClient builds the authz client of the control plane's signed
// bundle; nil, nil when ctx ended first.
func (n *Node) policyClient(ctx context.Context) (*authz.Client, error) {
	keys, err := n.trustedKeys(ctx)
	if err != nil || keys == nil {
		return nil, err
	}
	if n.cfg.CacheDir != "" {
		if err := os.MkdirAll(n.cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("mesh node: cache directory: %w", err)
		}
	}
	c, err := authz.New(authz.Config{
		URL: n.cfg.ServerURL, HTTPClient: n.deps.HTTPClient, TrustedKeys: keys,
		MaxStaleness: n.cfg.PolicyMaxStaleness, CacheFile: n.cachePath(bundleCacheFile),
		Now: n.deps.Now, Logger: n.log,
		OnRefused: func(r authz.BundleRefusal) {
			n.log.Error("mesh node: policy bundle refused", "reason", string(r.Reason), "source", r.Source, logKeyError, r.Err)
			n.events.send(bundleRefusedEvent(r))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mesh node: policy client: %w", err)
	}
	return c, nil
}

// writeFileAtomic writes data to path (mode 0600) through a renamed,
// fsynced temporary file, creating the directory if needed.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return devinfo.WriteFileAtomic(path, data, 0o600)
}
