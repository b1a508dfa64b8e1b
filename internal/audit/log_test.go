package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

const testOrigin = "bulwark.test/audit"

type testKeys struct{ skey, vkey string }

func newKeys(t testing.TB) testKeys {
	t.Helper()
	skey, vkey, err := audit.GenerateSigningKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{skey, vkey}
}

// startLog runs a Log over db until the test ends.
func startLog(t testing.TB, db *store.DB, keys testKeys, cfg audit.Config) *audit.Log {
	t.Helper()
	if cfg.Origin == "" {
		cfg.Origin = testOrigin
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Hour // tests issue checkpoints on demand
	}
	l, err := audit.New(cfg, audit.Deps{DB: db, SignerKey: keys.skey, VerifierKey: keys.vkey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("log run: %v", err)
		}
	})
	waitReady(t, l)
	return l
}

func waitReady(t testing.TB, l *audit.Log) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !l.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("log not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func event(i int) *audit.Event {
	return &audit.Event{
		ClassName: "Authentication", ActivityName: "Logon", StatusID: audit.StatusSuccess,
		Time:     1_700_000_000_000 + int64(i),
		Actor:    &audit.Actor{User: &audit.User{UID: fmt.Sprintf("user-%d", i), Name: "alice"}},
		Metadata: audit.Metadata{UID: fmt.Sprintf("evt-%d", i), CorrelationUID: "corr-1"},
	}
}

func TestAppendProveAndCheckpoint(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		keys := newKeys(t)
		l := startLog(t, db, keys, audit.Config{})

		var leaves []tlog.Hash
		for batch := 0; batch < 7; batch++ {
			evs := make([]*audit.Event, batch+1)
			for i := range evs {
				evs[i] = event(len(leaves) + i)
			}
			res, err := l.Append(ctx, evs)
			if err != nil {
				t.Fatal(err)
			}
			if res.First != int64(len(leaves)) {
				t.Fatalf("batch %d logged at %d, want %d", batch, res.First, len(leaves))
			}
			leaves = append(leaves, res.LeafHashes...)
		}
		ck, err := l.IssueCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ck.Size != int64(len(leaves)) {
			t.Fatalf("checkpoint size %d, want %d", ck.Size, len(leaves))
		}
		// The signature checks with the standard note package.
		v, err := note.NewVerifier(keys.vkey)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(ck.Note, note.VerifierList(v))
		if err != nil {
			t.Fatalf("checkpoint signature: %v", err)
		}
		if !strings.HasPrefix(n.Text, testOrigin+"\n"+fmt.Sprint(len(leaves))+"\n") {
			t.Fatalf("checkpoint body %q", n.Text)
		}
		// Every entry's inclusion proof verifies with both reference verifiers.
		for i, leaf := range leaves {
			p, err := l.InclusionProof(ctx, int64(i), ck.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, ck.Size, ck.Root, int64(i), leaf); err != nil {
				t.Fatalf("tlog.CheckRecord entry %d: %v", i, err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(ck.Size), leaf[:], toSlices(p), ck.Root[:]); err != nil {
				t.Fatalf("merkle.VerifyInclusion entry %d: %v", i, err)
			}
		}
		// Consistency from every earlier size to the checkpoint.
		for from := int64(1); from <= ck.Size; from++ {
			old, err := l.TreeHash(ctx, from)
			if err != nil {
				t.Fatal(err)
			}
			p, err := l.ConsistencyProof(ctx, from, ck.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(from), uint64(ck.Size), toSlices(p), old[:], ck.Root[:]); err != nil {
				t.Fatalf("consistency %d -> %d: %v", from, ck.Size, err)
			}
		}
		// The root is the RFC 6962 root of the entries as stored.
		entries, err := l.Entries(ctx, 0, len(leaves))
		if err != nil {
			t.Fatal(err)
		}
		var data [][]byte
		for _, e := range entries {
			data = append(data, e.Data)
		}
		if got := rfc6962Root(data); !bytes.Equal(got, ck.Root[:]) {
			t.Fatalf("recomputed root %x, checkpoint %x", got, ck.Root)
		}
		// Out-of-range requests are refused, not answered.
		if _, err := l.InclusionProof(ctx, ck.Size, ck.Size); !errors.Is(err, audit.ErrOutOfRange) {
			t.Fatalf("proof beyond the tree: %v", err)
		}
		if _, err := l.ConsistencyProof(ctx, 1, ck.Size+1); !errors.Is(err, audit.ErrOutOfRange) {
			t.Fatalf("consistency beyond the tree: %v", err)
		}
	})
}

func TestEmptyLogCheckpoint(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		l := startLog(t, db, newKeys(t), audit.Config{})
		ck, err := l.LatestCheckpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ck.Size != 0 || !bytes.Equal(ck.Root[:], rfc6962.DefaultHasher.EmptyRoot()) {
			t.Fatalf("empty checkpoint: size %d root %x", ck.Size, ck.Root)
		}
	})
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		l := startLog(t, db, newKeys(t), audit.Config{CommitBatch: 64})
		const workers, each = 16, 25
		var (
			mu   sync.Mutex
			seen = map[int64]string{}
			wg   sync.WaitGroup
		)
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					e := event(w*1000 + i)
					res, err := l.Append(ctx, []*audit.Event{e})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					seen[res.First] = e.Metadata.UID
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(seen) != workers*each {
			t.Fatalf("%d distinct indexes for %d appends", len(seen), workers*each)
		}
		entries, err := l.Entries(ctx, 0, workers*each)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if e.Index != int64(i) {
				t.Fatalf("entry %d has index %d", i, e.Index)
			}
			ev, err := audit.DecodeEvent(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Metadata.UID != seen[e.Index] {
				t.Fatalf("entry %d holds %s, the append was told %s", i, ev.Metadata.UID, seen[e.Index])
			}
		}
		ck, err := l.IssueCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var data [][]byte
		for _, e := range entries {
			data = append(data, e.Data)
		}
		if !bytes.Equal(rfc6962Root(data), ck.Root[:]) {
			t.Fatal("root of the stored entries differs from the checkpoint")
		}
	})
}

func TestOversizedEventStoredBeside(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		l := startLog(t, db, newKeys(t), audit.Config{})
		e := event(1)
		big := make(map[string]any)
		for i := 0; i < 40; i++ {
			big[fmt.Sprintf("k%02d", i)] = strings.Repeat("y", 3000)
		}
		e.Unmapped = big // ~120 KiB canonical: more than one entry may hold
		res, err := l.Append(ctx, []*audit.Event{e})
		if err != nil {
			t.Fatal(err)
		}
		canon, err := e.Canonical() // the event as Append normalised it in place
		if err != nil {
			t.Fatal(err)
		}
		entries, err := l.Entries(ctx, res.First, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries[0].Data) > audit.MaxEntryBytes {
			t.Fatalf("entry is %d bytes", len(entries[0].Data))
		}
		ref, err := audit.DecodeEvent(entries[0].Data)
		if err != nil {
			t.Fatal(err)
		}
		if ref.PayloadRef == nil {
			t.Fatal("oversized event logged without a payload reference")
		}
		sum := sha256.Sum256(canon)
		if ref.PayloadRef.SHA256 != hex.EncodeToString(sum[:]) || ref.PayloadRef.Size != len(canon) {
			t.Fatalf("payload ref %+v does not match the event", ref.PayloadRef)
		}
		blob, err := l.Blob(ctx, ref.PayloadRef.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(blob, canon) {
			t.Fatal("stored payload differs from the canonical event")
		}
		// Past the configured maximum, the event is refused.
		small := startLog(t, db, newKeys(t), audit.Config{MaxEventBytes: 2048})
		_, err = small.Append(ctx, []*audit.Event{e})
		var ve *audit.ValidationError
		if !errors.As(err, &ve) || ve.Code != audit.CodeEventTooLarge {
			t.Fatalf("append beyond max_event_bytes: %v", err)
		}
	})
}

func TestRestartContinuesTheSameTree(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			opts := storetest.Options(t, d)
			keys := newKeys(t)
			var roots []tlog.Hash
			for run := 0; run < 3; run++ {
				db, err := store.Open(ctx, opts)
				if err != nil {
					t.Fatal(err)
				}
				l, err := audit.New(audit.Config{Origin: testOrigin}, audit.Deps{DB: db, SignerKey: keys.skey, VerifierKey: keys.vkey})
				if err != nil {
					t.Fatal(err)
				}
				rctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- l.Run(rctx) }()
				waitReady(t, l)
				if _, err := l.Append(ctx, []*audit.Event{event(run), event(run + 10)}); err != nil {
					t.Fatal(err)
				}
				ck, err := l.IssueCheckpoint(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if ck.Size != int64(2*(run+1)) {
					t.Fatalf("run %d: size %d", run, ck.Size)
				}
				for i, old := range roots {
					p, err := l.ConsistencyProof(ctx, int64(2*(i+1)), ck.Size)
					if err != nil {
						t.Fatal(err)
					}
					if err := tlog.CheckTree(p, ck.Size, ck.Root, int64(2*(i+1)), old); err != nil {
						t.Fatalf("run %d not consistent with run %d: %v", run, i, err)
					}
				}
				roots = append(roots, ck.Root)
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				db.Close()
			}
		})
	}
}

func TestTilesAuthenticateAgainstCheckpoint(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		l := startLog(t, db, newKeys(t), audit.Config{})
		const n = 700 // two full level-0 tiles and a partial one
		for start := 0; start < n; start += 100 {
			evs := make([]*audit.Event, 100)
			for i := range evs {
				evs[i] = event(start + i)
			}
			if _, err := l.Append(ctx, evs); err != nil {
				t.Fatal(err)
			}
		}
		ck, err := l.IssueCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tree := tlog.Tree{N: ck.Size, Hash: ck.Root}
		tr := &logTileReader{ctx: ctx, l: l}
		hr := tlog.TileHashReader(tree, tr)
		for i := int64(0); i < n; i += 37 {
			hs, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
			if err != nil {
				t.Fatalf("authenticated leaf %d: %v", i, err)
			}
			entries, err := l.Entries(ctx, i, 1)
			if err != nil {
				t.Fatal(err)
			}
			if hs[0] != tlog.RecordHash(entries[0].Data) {
				t.Fatalf("leaf %d from tiles differs from the entry", i)
			}
		}
		// Entry bundles split back into the stored entries.
		bundle, err := l.ReadTile(ctx, tlog.Tile{H: audit.TileHeight, L: -1, N: 2, W: n - 512})
		if err != nil {
			t.Fatal(err)
		}
		parts, err := audit.SplitEntryBundle(bundle)
		if err != nil || len(parts) != n-512 {
			t.Fatalf("bundle: %d entries, %v", len(parts), err)
		}
		// A tile beyond the tree is not served.
		if _, err := l.ReadTile(ctx, tlog.Tile{H: audit.TileHeight, L: 0, N: 3, W: 256}); !errors.Is(err, audit.ErrNotFound) {
			t.Fatalf("tile beyond the tree: %v", err)
		}
	})
}

func TestTilePaths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want tlog.Tile
	}{
		{"tile/0/000", tlog.Tile{H: 8, L: 0, N: 0, W: 256}},
		{"tile/0/x001/234", tlog.Tile{H: 8, L: 0, N: 1234, W: 256}},
		{"tile/2/001.p/7", tlog.Tile{H: 8, L: 2, N: 1, W: 7}},
		{"tile/entries/x001/x234/067.p/255", tlog.Tile{H: 8, L: -1, N: 1234067, W: 255}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			got, err := audit.ParseTilePath(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("ParseTilePath = %+v, want %+v", got, tt.want)
			}
			if back := audit.TilePath(got); back != tt.path {
				t.Fatalf("TilePath = %q, want %q", back, tt.path)
			}
		})
	}
	for _, bad := range []string{"", "tile/", "tile/8/0/000", "tile/0/1234", "tile/entries/000.p/0", "tile/../etc/passwd", "tile/0/000.p/256", "checkpoint"} {
		if _, err := audit.ParseTilePath(bad); err == nil {
			t.Errorf("ParseTilePath(%q) accepted", bad)
		}
	}
}

// logTileReader feeds tlog.TileHashReader from the log's own tile API.
type logTileReader struct {
	ctx context.Context
	l   *audit.Log
}

func (r *logTileReader) Height() int { return audit.TileHeight }
func (r *logTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := r.l.ReadTile(r.ctx, t)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}
func (r *logTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func toSlices(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// rfc6962Root computes the RFC 6962 root independently of the log, with
// transparency-dev's hasher.
func rfc6962Root(entries [][]byte) []byte {
	h := rfc6962.DefaultHasher
	if len(entries) == 0 {
		return h.EmptyRoot()
	}
	var root func(lo, hi int) []byte
	root = func(lo, hi int) []byte {
		if hi-lo == 1 {
			return h.HashLeaf(entries[lo])
		}
		k := 1
		for k*2 < hi-lo {
			k *= 2
		}
		return h.HashChildren(root(lo, lo+k), root(lo+k, hi))
	}
	return root(0, len(entries))
}
