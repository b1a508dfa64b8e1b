package audit

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// querier is what the hash reader needs from a store or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// hashLocation maps a tlog stored-hash index to the record whose append
// produced it and its position in that record's list of stored hashes.
func hashLocation(index int64) (record int64, offset int) {
	level, n := tlog.SplitStoredHashIndex(index)
	return (n+1)<<uint(level) - 1, level
}

// cacheHighLevel is the lowest tree level whose hashes the cache keeps for
// ever: one in 2^8 hashes, so a billion-entry log keeps ~4M hashes (128 MiB).
const cacheHighLevel = 8

// recentRecords is how many recent records keep all their hashes cached:
// enough for every left sibling an append needs below cacheHighLevel.
const recentRecords = 1 << 12

// hashCache keeps the Merkle hashes that appends and proofs read most: all
// hashes at high levels and every hash of recent records. Stored hashes are
// immutable once committed, so the cache is never invalidated, only filled.
type hashCache struct {
	mu     sync.RWMutex
	high   map[int64]tlog.Hash
	recent [recentRecords]recentSlot
}

type recentSlot struct {
	record int64 // record+1, so the zero slot is empty
	hashes []tlog.Hash
}

func newHashCache() *hashCache { return &hashCache{high: make(map[int64]tlog.Hash)} }

func (c *hashCache) get(index int64) (tlog.Hash, bool) {
	record, off := hashLocation(index)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if off >= cacheHighLevel {
		h, ok := c.high[index]
		return h, ok
	}
	s := &c.recent[record%recentRecords]
	if s.record == record+1 && off < len(s.hashes) {
		return s.hashes[off], true
	}
	return tlog.Hash{}, false
}

// addRecord caches the stored hashes produced by appending record.
func (c *hashCache) addRecord(record int64, hashes []tlog.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recent[record%recentRecords] = recentSlot{record: record + 1, hashes: hashes}
	for off := cacheHighLevel; off < len(hashes); off++ {
		c.high[tlog.StoredHashIndex(off, record>>uint(off))] = hashes[off]
	}
}

func (c *hashCache) addHigh(index int64, h tlog.Hash) {
	if _, off := hashLocation(index); off < cacheHighLevel {
		return
	}
	c.mu.Lock()
	c.high[index] = h
	c.mu.Unlock()
}

// storeHashReader reads stored hashes: from a map of hashes being written
// in the current transaction, then the cache, then the database.
type storeHashReader struct {
	ctx     context.Context
	q       querier
	cache   *hashCache
	pending map[int64]tlog.Hash
}

// ReadHashes implements tlog.HashReader.
func (r *storeHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []int // positions in indexes
	for i, idx := range indexes {
		if h, ok := r.pending[idx]; ok {
			out[i] = h
			continue
		}
		if h, ok := r.cache.get(idx); ok {
			out[i] = h
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	records := make(map[int64][]int) // record -> positions needing it
	for _, i := range missing {
		rec, _ := hashLocation(indexes[i])
		records[rec] = append(records[rec], i)
	}
	recs := make([]int64, 0, len(records))
	for rec := range records {
		recs = append(recs, rec)
	}
	const chunk = 500
	for start := 0; start < len(recs); start += chunk {
		part := recs[start:min(start+chunk, len(recs))]
		args := make([]any, len(part))
		for i, rec := range part {
			args[i] = rec
		}
		q := "SELECT record, hashes FROM audit_hashes WHERE record IN (?" + strings.Repeat(",?", len(part)-1) + ")"
		rows, err := r.q.QueryContext(r.ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("read tree hashes: %w", err)
		}
		for rows.Next() {
			var rec int64
			var blob []byte
			if err := rows.Scan(&rec, &blob); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read tree hashes: %w", err)
			}
			for _, i := range records[rec] {
				_, off := hashLocation(indexes[i])
				if len(blob) < (off+1)*tlog.HashSize {
					rows.Close()
					return nil, fmt.Errorf("read tree hashes: record %d holds %d bytes of hashes, need level %d", rec, len(blob), off)
				}
				copy(out[i][:], blob[off*tlog.HashSize:])
				r.cache.addHigh(indexes[i], out[i])
			}
			delete(records, rec)
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("read tree hashes: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read tree hashes: %w", err)
		}
	}
	for rec := range records {
		return nil, fmt.Errorf("read tree hashes: %w: no hashes stored for record %d", ErrCorrupt, rec)
	}
	return out, nil
}

func packHashes(hs []tlog.Hash) []byte {
	b := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}
