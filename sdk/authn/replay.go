package authn

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxReplayEntries bounds the DPoP proofs remembered per generation. When
// it is reached, new proofs are refused (fail closed) until the generation
// turns over.
const maxReplayEntries = 1 << 18

// replayCache remembers the DPoP proofs seen, in two generations that turn
// over every period: a proof is remembered for at least one period, which
// is at least as long as a proof stays acceptable (twice the iat window,
// plus the leeway).
type replayCache struct {
	period time.Duration
	max    int

	mu      sync.Mutex
	turned  time.Time
	cur     map[[sha256.Size]byte]struct{}
	prev    map[[sha256.Size]byte]struct{}
	initial bool
}

func newReplayCache(period time.Duration, max int) *replayCache {
	return &replayCache{period: period, max: max, cur: map[[sha256.Size]byte]struct{}{}, prev: map[[sha256.Size]byte]struct{}{}}
}

// replayResult is what seen found.
type replayResult int

const (
	replayNew replayResult = iota
	replaySeen
	replayFull
)

// seen records the proof (thumbprint, jti) and reports whether it was
// already recorded, or the cache is full.
func (c *replayCache) seen(thumbprint, jti string, now time.Time) replayResult {
	h := sha256.New()
	h.Write([]byte(thumbprint))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var k [sha256.Size]byte
	h.Sum(k[:0])

	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.initial || now.Before(c.turned):
		c.initial, c.turned = true, now
	case now.Sub(c.turned) >= 2*c.period:
		c.prev, c.cur = map[[sha256.Size]byte]struct{}{}, map[[sha256.Size]byte]struct{}{}
		c.turned = now
	case now.Sub(c.turned) >= c.period:
		c.prev, c.cur = c.cur, map[[sha256.Size]byte]struct{}{}
		c.turned = now
	}
	if _, ok := c.cur[k]; ok {
		return replaySeen
	}
	if _, ok := c.prev[k]; ok {
		return replaySeen
	}
	if len(c.cur) >= c.max {
		return replayFull
	}
	c.cur[k] = struct{}{}
	return replayNew
}
