package authz

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BundlePath is the path of the bundle endpoint under the control plane's
// base URL.
const BundlePath = "/v1/policy/bundle"

// Defaults of [Config].
const (
	// DefaultMaxStaleness is the default of Config.MaxStaleness.
	DefaultMaxStaleness = 10 * time.Minute
	// DefaultPollWait is the default of Config.PollWait.
	DefaultPollWait = 30 * time.Second
)

// Retry backoff after a failed fetch: exponential from minBackoff to
// maxBackoff, with jitter.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
	// minPollInterval spaces requests when the server answers a long poll
	// at once, so that a misbehaving server cannot make the client spin.
	minPollInterval = time.Second
	// requestSlack is added to the poll wait for the whole request.
	requestSlack = 30 * time.Second
)

// Log attribute keys.
const (
	logKeyErr     = "err"
	logKeyVersion = "bundle_version"
	logKeyActive  = "active_version"
	logKeyReason  = "reason"
	logKeySource  = "source"
	logKeyStatus  = "status"
	logKeyRetry   = "retry_in"
	logKeyFile    = "file"
)

// Config configures a [Client].
type Config struct {
	// URL is the control plane's base URL (https), e.g.
	// https://127.0.0.1:8443; the bundle is fetched from URL + BundlePath.
	URL string
	// HTTPClient carries TLS (and the caller's client certificate). Required.
	HTTPClient *http.Client
	// Token, if set, returns a bearer credential sent with every request.
	Token func(ctx context.Context) (string, error)
	// TrustedKeys are the pinned bundle-signing keys. Required.
	TrustedKeys []ed25519.PublicKey
	// MaxStaleness is how long the active bundle stays usable after the
	// control plane last confirmed it is current (a verified bundle, or a
	// 304 Not Modified for the active version, over the authenticated
	// channel): when the control plane has been unreachable for longer,
	// every decision is denied (default DefaultMaxStaleness). The
	// bundle's own expiry is an absolute limit on top.
	MaxStaleness time.Duration
	// CacheFile, if set, is where the last good bundle is kept (mode 0600,
	// replaced atomically) and loaded from at start; a cached bundle is
	// verified like a fetched one and subject to expiry and staleness; it
	// counts as confirmed when the file was written, never later.
	CacheFile string
	// PollWait is the long-poll wait sent as ?wait= (default
	// DefaultPollWait).
	PollWait time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Logger receives the client's logs (default: discarded).
	Logger *slog.Logger
	// OnRefused, if set, is called for every bundle refused (tampered,
	// unknown key, rollback, expired, malformed), so that the service can
	// audit it. It is called from the fetch loop and must not block long.
	OnRefused func(BundleRefusal)
}

// BundleRefusalReason classifies a refused bundle.
type BundleRefusalReason string

// Why a bundle was refused.
const (
	// RefusedMalformed: not a bundle (bad JSON, trailing data, bad base64,
	// oversized, wrong format) or unusable policies.
	RefusedMalformed BundleRefusalReason = "malformed"
	// RefusedUnknownKey: signed by a key that is not trusted.
	RefusedUnknownKey BundleRefusalReason = "unknown_key"
	// RefusedBadSignature: the signature does not verify (tampered
	// manifest or signature).
	RefusedBadSignature BundleRefusalReason = "bad_signature"
	// RefusedDigest: content does not match the signed manifest (tampered
	// policies, schema or entities).
	RefusedDigest BundleRefusalReason = "digest_mismatch"
	// RefusedExpired: the bundle's expiry has passed.
	RefusedExpired BundleRefusalReason = "expired"
	// RefusedRollback: a validly signed bundle older than the active one
	// (a replay).
	RefusedRollback BundleRefusalReason = "rollback"
)

// Where a refused bundle came from.
const (
	// SourceControlPlane: fetched from the control plane.
	SourceControlPlane = "control_plane"
	// SourceCache: read from Config.CacheFile at start.
	SourceCache = "cache"
)

// BundleRefusal describes a refused bundle.
type BundleRefusal struct {
	Reason BundleRefusalReason
	// Source is SourceControlPlane or SourceCache.
	Source string
	// Version is the refused bundle's version when its signature verified
	// (0 otherwise).
	Version int64
	// ActiveVersion is the version of the bundle kept in use (0 if none).
	ActiveVersion int64
	// Err is the verification error.
	Err error
}

// active is the bundle in use; replaced as a whole.
type active struct {
	ev        *Evaluator
	version   int64
	issuedAt  time.Time
	expiresAt time.Time
}

// Client fetches signed policy bundles from the control plane and decides
// requests locally from the newest valid one. Decide is lock-free and
// safe for concurrent use.
type Client struct {
	cfg      Config
	bundle   string
	trusted  map[string]ed25519.PublicKey
	log      *slog.Logger
	current  atomic.Pointer[active]
	changed  atomic.Pointer[chan struct{}]
	mu       sync.Mutex // serialises activation
	floor    int64      // highest signed version seen (guarded by mu)
	running  atomic.Bool
	maxBytes int
	// confirmed is when (Unix nanoseconds) the control plane last
	// confirmed that the active bundle is current.
	confirmed atomic.Int64
}

// New validates cfg and returns a client; if cfg.CacheFile holds a valid
// bundle it is active at once. Call Run to keep it current.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("authz client: URL is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("authz client: URL %q is not an absolute URL", cfg.URL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("authz client: URL %q must use https", cfg.URL)
	}
	if cfg.HTTPClient == nil {
		return nil, errors.New("authz client: HTTPClient is required")
	}
	if len(cfg.TrustedKeys) == 0 {
		return nil, errors.New("authz client: at least one trusted bundle key is required")
	}
	if cfg.MaxStaleness < 0 || cfg.PollWait < 0 {
		return nil, errors.New("authz client: MaxStaleness and PollWait must not be negative")
	}
	c := &Client{cfg: cfg, trusted: make(map[string]ed25519.PublicKey, len(cfg.TrustedKeys)), maxBytes: DefaultMaxBundleBytes}
	for i, k := range cfg.TrustedKeys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("authz client: trusted key %d is %d bytes, want %d", i, len(k), ed25519.PublicKeySize)
		}
		c.trusted[KeyID(k)] = k
	}
	if c.cfg.MaxStaleness == 0 {
		c.cfg.MaxStaleness = DefaultMaxStaleness
	}
	if c.cfg.PollWait == 0 {
		c.cfg.PollWait = DefaultPollWait
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	c.log = cfg.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.bundle = strings.TrimSuffix(cfg.URL, "/") + BundlePath
	ch := make(chan struct{})
	c.changed.Store(&ch)
	if cfg.CacheFile != "" {
		c.loadCache()
	}
	return c, nil
}

// loadCache activates the bundle of the cache file if it verifies. A
// cached bundle that verifies but has expired still sets the rollback
// floor.
func (c *Client) loadCache() {
	raw, err := readLimited(c.cfg.CacheFile, c.maxBytes)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		c.log.Warn("authz: read the bundle cache", slog.String(logKeyFile, c.cfg.CacheFile), slog.Any(logKeyErr, err))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.install(raw, SourceCache)
}

func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Version returns the version of the active bundle, 0 if none.
func (c *Client) Version() int64 {
	if a := c.current.Load(); a != nil {
		return a.version
	}
	return 0
}

// WaitVersion waits until the active bundle's version is at least v, or
// ctx ends.
func (c *Client) WaitVersion(ctx context.Context, v int64) error {
	for {
		ch := c.changed.Load()
		if c.Version() >= v {
			return nil
		}
		select {
		case <-*ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for policy bundle version %d (have %d): %w", v, c.Version(), ctx.Err())
		}
	}
}

// Decide answers req from the active bundle. Without a bundle, or when the
// bundle is stale (older than MaxStaleness) or expired, it denies with a
// Refusal: it never allows without a current, verified bundle.
func (c *Client) Decide(req Request) Decision {
	a := c.current.Load()
	if a == nil {
		return Decision{Refusal: RefusalNoBundle}
	}
	now := c.cfg.Now()
	if now.Sub(time.Unix(0, c.confirmed.Load())) > c.cfg.MaxStaleness || !now.Before(a.expiresAt) {
		return Decision{Refusal: RefusalStale, BundleVersion: a.version}
	}
	return a.ev.Decide(req)
}

// Run fetches bundles until ctx ends, long-polling the control plane and
// retrying with backoff when it fails; the last good bundle stays active
// meanwhile. It returns nil when ctx ends. Run must not be called twice at
// the same time.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("authz client: Run is already running")
	}
	defer c.running.Store(false)
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		fresh, err := c.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = backoff(failures)
			c.log.Warn("authz: fetch the policy bundle", slog.Any(logKeyErr, err), slog.Duration(logKeyRetry, wait),
				slog.Int64(logKeyActive, c.Version()))
		} else {
			failures = 0
			if !fresh {
				wait = minPollInterval - time.Since(start)
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
	return nil
}

// backoff returns the wait after n consecutive failures: exponential from
// minBackoff, capped at maxBackoff, in [d/2, d].
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 16 {
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// errRefused marks a fetch whose bundle was refused (already reported).
var errRefused = errors.New("bundle refused")

// fetch makes one long-poll request and installs what it returns; fresh
// reports a bundle (rather than 304 Not Modified).
func (c *Client) fetch(ctx context.Context) (fresh bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PollWait+requestSlack)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		c.bundle+"?wait="+strconv.FormatInt(int64(c.cfg.PollWait/time.Second), 10)+"s", nil)
	if err != nil {
		return false, fmt.Errorf("build request: %w", err)
	}
	if v := c.Version(); v > 0 {
		req.Header.Set("If-None-Match", `"`+strconv.FormatInt(v, 10)+`"`)
	}
	req.Header.Set("Accept", "application/json")
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return false, fmt.Errorf("get credential: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("request %s: %w", c.bundle, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		// The control plane vouches that the active bundle is current.
		if c.Version() > 0 {
			c.confirmed.Store(c.cfg.Now().UnixNano())
		}
		return false, nil
	case http.StatusOK:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return false, fmt.Errorf("control plane answered %s", resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(c.maxBytes)+1))
	if err != nil {
		return false, fmt.Errorf("read bundle: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.Version()
	if !c.install(raw, SourceControlPlane) {
		return false, errRefused
	}
	// A 200 with the version already active (a server ignoring
	// If-None-Match) is paced like a 304.
	return c.Version() != before, nil
}

// install verifies raw and activates it if it is newer than the active
// bundle. It reports refusals and returns false for them; an equal
// version is a no-op. c.mu must be held.
func (c *Client) install(raw []byte, source string) bool {
	now := c.cfg.Now()
	cur := c.Version()
	vb, err := VerifyBundle(raw, c.trusted, now, c.maxBytes)
	if err != nil {
		r := BundleRefusal{Reason: refusalReason(err), Source: source, ActiveVersion: cur, Err: err}
		if r.Reason == RefusedExpired {
			// The signature verified: its version is the control plane's
			// word and no older bundle may follow it.
			if v := manifestVersion(raw); v > 0 {
				r.Version = v
				c.floor = max(c.floor, v)
			}
		}
		c.refuse(r)
		return false
	}
	v := vb.Manifest.Version
	if v == cur {
		if source == SourceControlPlane {
			c.confirmed.Store(now.UnixNano())
		}
		return true
	}
	if v < cur || v < c.floor {
		c.refuse(BundleRefusal{Reason: RefusedRollback, Source: source, Version: v, ActiveVersion: cur,
			Err: fmt.Errorf("bundle version %d is older than version %d", v, max(cur, c.floor))})
		return false
	}
	ev, err := NewEvaluatorFromBundle(vb)
	if err != nil {
		c.refuse(BundleRefusal{Reason: RefusedMalformed, Source: source, Version: v, ActiveVersion: cur, Err: err})
		return false
	}
	c.floor = max(c.floor, v)
	confirmed := now
	if source == SourceCache {
		confirmed = c.cacheTime(now)
	}
	c.confirmed.Store(confirmed.UnixNano())
	c.current.Store(&active{ev: ev, version: v, issuedAt: vb.Manifest.IssuedAt, expiresAt: vb.Manifest.ExpiresAt})
	next := make(chan struct{})
	close(*c.changed.Swap(&next))
	c.log.Info("authz: policy bundle activated", slog.Int64(logKeyVersion, v), slog.String(logKeySource, source))
	if source == SourceControlPlane && c.cfg.CacheFile != "" {
		if err := writeAtomic(c.cfg.CacheFile, raw); err != nil {
			c.log.Warn("authz: write the bundle cache", slog.String(logKeyFile, c.cfg.CacheFile), slog.Any(logKeyErr, err))
		}
	}
	return true
}

// cacheTime is when the cache file was written (it holds a bundle the
// control plane served then), and never later than now.
func (c *Client) cacheTime(now time.Time) time.Time {
	fi, err := os.Stat(c.cfg.CacheFile)
	if err != nil {
		return now.Add(-c.cfg.MaxStaleness - time.Nanosecond) // unknown: stale at once
	}
	if fi.ModTime().After(now) {
		return now
	}
	return fi.ModTime()
}

func (c *Client) refuse(r BundleRefusal) {
	c.log.Warn("authz: policy bundle refused", slog.String(logKeyReason, string(r.Reason)), slog.String(logKeySource, r.Source),
		slog.Int64(logKeyVersion, r.Version), slog.Int64(logKeyActive, r.ActiveVersion), slog.Any(logKeyErr, r.Err))
	if c.cfg.OnRefused != nil {
		c.cfg.OnRefused(r)
	}
}

func refusalReason(err error) BundleRefusalReason {
	switch {
	case errors.Is(err, ErrUnknownKey):
		return RefusedUnknownKey
	case errors.Is(err, ErrBadSignature):
		return RefusedBadSignature
	case errors.Is(err, ErrDigest):
		return RefusedDigest
	case errors.Is(err, ErrExpired):
		return RefusedExpired
	default:
		return RefusedMalformed
	}
}

// manifestVersion returns the version in raw's manifest, 0 if it cannot
// be read. Only call it on a bundle whose signature verified.
func manifestVersion(raw []byte) int64 {
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return 0
	}
	mb, err := base64.RawURLEncoding.DecodeString(b.Manifest)
	if err != nil {
		return 0
	}
	var m Manifest
	if err := json.NewDecoder(bytes.NewReader(mb)).Decode(&m); err != nil {
		return 0
	}
	return m.Version
}

// writeAtomic replaces path with data (mode 0600) through a synced
// temporary file in the same directory.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
