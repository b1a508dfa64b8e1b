package authn

import (
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"sync"
)

// cacheShards spreads the token cache over independently locked maps.
const cacheShards = 16

// cacheKey identifies a verified token: SHA-256 over the signing input as
// sent and the decoded signature bytes. Keying on the decoded signature,
// not the raw token string, makes the key independent of how the
// signature was base64url-encoded.
type cacheKey [sha256.Size]byte

// cacheEntry is a verified token.
type cacheEntry struct {
	p   *Principal
	exp int64 // Unix nanoseconds: the entry is good until then (exp + leeway)
	kid string
}

// tokenCache holds verified tokens until they expire, at most max of them.
type tokenCache struct {
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[cacheKey]*cacheEntry
}

func newTokenCache(size int) *tokenCache {
	if size < 0 {
		return nil
	}
	c := &tokenCache{perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]*cacheEntry)
	}
	return c
}

func (c *tokenCache) get(k *cacheKey) *cacheEntry {
	s := &c.shards[k[0]%cacheShards]
	s.mu.RLock()
	e := s.m[*k]
	s.mu.RUnlock()
	return e
}

// put stores e, making room first when the shard is full: expired entries
// go, and if that is not enough, an arbitrary eighth of the shard.
func (c *tokenCache) put(k *cacheKey, e *cacheEntry, now int64) {
	s := &c.shards[k[0]%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= c.perShard {
		for key, old := range s.m {
			if old.exp <= now {
				delete(s.m, key)
			}
		}
		for key := range s.m {
			if len(s.m) < c.perShard-c.perShard/8 {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[*k] = e
}

func (c *tokenCache) remove(k *cacheKey) {
	s := &c.shards[k[0]%cacheShards]
	s.mu.Lock()
	delete(s.m, *k)
	s.mu.Unlock()
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// keyScratch is the reusable memory of one cache-key computation, so that
// the cached path allocates nothing.
type keyScratch struct {
	h   hash.Hash
	buf []byte
	sig []byte
	sum []byte
}

var scratchPool = sync.Pool{New: func() any {
	return &keyScratch{h: sha256.New(), buf: make([]byte, 0, 2048), sig: make([]byte, 0, 512), sum: make([]byte, 0, sha256.Size)}
}}

// tokenKey computes the cache key of a compact JWS whose last dot is at
// lastDot. It reports false when the signature is not valid base64url.
func tokenKey(token string, lastDot int) (k cacheKey, ok bool) {
	s := scratchPool.Get().(*keyScratch)
	defer scratchPool.Put(s)
	s.buf = append(s.buf[:0], token...)
	enc := s.buf[lastDot+1:]
	need := base64.RawURLEncoding.DecodedLen(len(enc))
	if cap(s.sig) < need {
		s.sig = make([]byte, need)
	}
	n, err := base64.RawURLEncoding.Decode(s.sig[:need], enc)
	if err != nil {
		return k, false
	}
	s.h.Reset()
	s.h.Write(s.buf[:lastDot])
	s.h.Write(s.sig[:n])
	s.sum = s.h.Sum(s.sum[:0])
	copy(k[:], s.sum)
	return k, true
}
