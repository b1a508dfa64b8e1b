package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// maxKIDLength bounds the kid looked up; longer ones are unknown.
	maxKIDLength = 256
	// maxDocument bounds discovery, JWKS and feed responses.
	maxDocument = 1 << 20
	// fetchTimeout bounds one discovery or JWKS request.
	fetchTimeout = 10 * time.Second
	// defaultKeysMaxAge is the refresh interval when the JWKS response has
	// no max-age.
	defaultKeysMaxAge = 5 * time.Minute
	// maxKeysMaxAge caps the refresh interval whatever the max-age.
	maxKeysMaxAge = time.Hour
	// minRSABits is the smallest RSA key accepted.
	minRSABits = 2048
)

// verifyKey is one published key and the algorithms it may verify.
type verifyKey struct {
	key  any // ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey
	algs []string
}

// keySet is the issuer's published keys, by kid. It is never modified once
// stored.
type keySet map[string]*verifyKey

// keyStore holds the current key set and refreshes it: periodically, as the
// JWKS response's Cache-Control max-age says, and when a token names an
// unknown kid, at most once per JWKSRefresh.
type keyStore struct {
	uri     string
	client  *http.Client
	allowed []string // the configured algorithms
	minWait time.Duration
	log     *slog.Logger

	set     atomic.Pointer[keySet]
	fetches atomic.Int64 // completed fetch attempts, for tests

	mu         sync.Mutex
	lastForced time.Time // monotonic, not the injected clock
	inflight   *refreshCall
	maxAge     time.Duration // from the last successful fetch
}

type refreshCall struct {
	done chan struct{}
	err  error
}

func (ks *keyStore) lookup(kid string) (*verifyKey, bool) {
	k, ok := (*ks.set.Load())[kid]
	return k, ok
}

func (ks *keyStore) has(kid string) bool {
	_, ok := (*ks.set.Load())[kid]
	return ok
}

// fetch downloads and installs the key set, and remembers its max-age.
func (ks *keyStore) fetch(ctx context.Context) error {
	defer ks.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var doc jose.JSONWebKeySet
	resp, err := getJSON(ctx, ks.client, ks.uri, &doc)
	if err != nil {
		return fmt.Errorf("fetch key set: %w", err)
	}
	set := ks.parse(doc)
	if len(set) == 0 {
		return errors.New("fetch key set: no usable signing key")
	}
	ks.set.Store(&set)
	ks.mu.Lock()
	ks.maxAge = maxAge(resp.Header)
	ks.mu.Unlock()
	return nil
}

// parse keeps the usable keys of a JWKS: public signing keys with a kid,
// of a type and size that an allowed algorithm can use.
func (ks *keyStore) parse(doc jose.JSONWebKeySet) keySet {
	set := keySet{}
	for i := range doc.Keys {
		k := &doc.Keys[i]
		if k.KeyID == "" || len(k.KeyID) > maxKIDLength || (k.Use != "" && k.Use != "sig") || !k.Valid() || !k.IsPublic() {
			continue
		}
		if _, dup := set[k.KeyID]; dup {
			ks.log.Warn("key set repeats a kid; ignoring the repeat", slog.String("kid", k.KeyID))
			continue
		}
		var algs []string
		for _, a := range ks.allowed {
			if (k.Algorithm == "" || k.Algorithm == a) && keyFits(a, k.Key) {
				algs = append(algs, a)
			}
		}
		if len(algs) > 0 {
			set[k.KeyID] = &verifyKey{key: k.Key, algs: algs}
		}
	}
	return set
}

// keyFits reports whether key is of the type and size that alg needs, so
// that a key published for one algorithm can never verify another.
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

// refreshForUnknownKID fetches the key set again because a token named a
// kid it lacks, unless a fetch for that reason started less than minWait
// ago. Concurrent callers share one fetch, made by the first of them and
// ended by its ctx or life, the verifier's lifetime. It reports whether a
// fetch succeeded.
func (ks *keyStore) refreshForUnknownKID(ctx, life context.Context) bool {
	ks.mu.Lock()
	if c := ks.inflight; c != nil {
		ks.mu.Unlock()
		select {
		case <-c.done:
			return c.err == nil
		case <-ctx.Done():
			return false
		}
	}
	if !ks.lastForced.IsZero() && time.Since(ks.lastForced) < ks.minWait {
		ks.mu.Unlock()
		return false
	}
	ks.lastForced = time.Now()
	c := &refreshCall{done: make(chan struct{})}
	ks.inflight = c
	ks.mu.Unlock()

	fctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(life, cancel)
	err := ks.fetch(fctx)
	stop()
	cancel()
	if err != nil {
		ks.log.Warn("key set refresh failed", slog.String(attrError, err.Error()))
	}
	ks.mu.Lock()
	c.err = err
	ks.inflight = nil
	ks.mu.Unlock()
	close(c.done)
	return err == nil
}

// run refreshes the key set until ctx ends: after the last response's
// max-age (at least minWait, at most an hour), or with backoff after a
// failure.
func (ks *keyStore) run(ctx context.Context) {
	ks.mu.Lock()
	wait := ks.interval()
	ks.mu.Unlock()
	failures := 0
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ks.fetch(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			ks.log.Warn("key set refresh failed", slog.String(attrError, err.Error()))
			t.Reset(backoff(failures, ks.minWait))
			continue
		}
		failures = 0
		ks.mu.Lock()
		wait = ks.interval()
		ks.mu.Unlock()
		t.Reset(wait)
	}
}

// interval is the time until the next periodic fetch. ks.mu is held.
func (ks *keyStore) interval() time.Duration {
	if ks.maxAge <= 0 {
		return max(defaultKeysMaxAge, ks.minWait)
	}
	return min(max(ks.maxAge, ks.minWait), maxKeysMaxAge)
}

// maxAge reads Cache-Control max-age, or 0.
func maxAge(h http.Header) time.Duration {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
			if !ok || !strings.EqualFold(name, "max-age") {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(val, `"`))
			if err != nil || n < 0 {
				return 0
			}
			return time.Duration(min(n, int(maxKeysMaxAge/time.Second))) * time.Second
		}
	}
	return 0
}

// getJSON GETs url and decodes a JSON response of at most maxDocument
// bytes into v.
func getJSON(ctx context.Context, client *http.Client, url string, v any) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	dec := json.NewDecoder(&limitedReader{r: resp.Body, n: maxDocument})
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", url, err)
	}
	return resp, nil
}
