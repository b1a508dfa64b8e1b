package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	tlogfmt "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// TestHTTPAppendAndProofVerifyWithReferenceLibraries is the audit trail's
// done-when: events appended through the HTTP API with the real admin
// credential get inclusion proofs over HTTP that the reference verifiers
// (x/mod tlog and transparency-dev/merkle) accept against a checkpoint
// fetched over HTTP whose signature x/mod's note package checks with the
// key from GET /v1/audit/key.
func TestHTTPAppendAndProofVerifyWithReferenceLibraries(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ts := newTestServer(t, db, newKeys(t), audit.APIConfig{})
		appended := appendHTTP(t, ts.client, 0, 20)
		oldNote, err := ts.client.IssueCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, appendHTTP(t, ts.client, 20, 17)...)
		if _, err := ts.client.IssueCheckpoint(ctx); err != nil {
			t.Fatal(err)
		}

		// The checkpoint, fetched over HTTP, checked with the note package
		// and the key fetched over HTTP.
		vkey, err := ts.client.Key(ctx)
		if err != nil {
			t.Fatal(err)
		}
		verifier, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := ts.client.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		size, root := openCheckpoint(t, signed, verifier)
		if size != 37 {
			t.Fatalf("checkpoint size %d, want 37", size)
		}
		oldSize, oldRoot := openCheckpoint(t, oldNote, verifier)

		page, err := ts.client.Entries(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) != 37 {
			t.Fatalf("%d entries", len(page.Entries))
		}
		for i, a := range appended {
			leaf := tlog.RecordHash(page.Entries[i].Data)
			if a.Index != int64(i) || !bytes.Equal(a.LeafHash, leaf[:]) {
				t.Fatalf("entry %d: the append answered index %d leaf %x, the entry hashes to %x", i, a.Index, a.LeafHash, leaf)
			}
			ip, err := ts.client.InclusionProof(ctx, a.Index, size)
			if err != nil {
				t.Fatal(err)
			}
			rp, err := ip.RecordProof()
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(rp, size, root, a.Index, leaf); err != nil {
				t.Fatalf("tlog.CheckRecord entry %d: %v", i, err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(a.Index), uint64(size), leaf[:], ip.Proof, root[:]); err != nil {
				t.Fatalf("proof.VerifyInclusion entry %d: %v", i, err)
			}
			if ip.Checkpoint != string(signed) {
				t.Fatalf("entry %d: the proof names another checkpoint", i)
			}
			// The same proof for another leaf fails.
			other := tlog.RecordHash([]byte("not an entry"))
			if tlog.CheckRecord(rp, size, root, a.Index, other) == nil {
				t.Fatalf("entry %d: a proof verified for another leaf", i)
			}
		}
		// The latest tree extends the older checkpoint.
		cp, err := ts.client.ConsistencyProof(ctx, oldSize, size)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := cp.TreeProof()
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(tp, size, root, oldSize, oldRoot); err != nil {
			t.Fatalf("tlog.CheckTree: %v", err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(oldSize), uint64(size), cp.Proof, oldRoot[:], root[:]); err != nil {
			t.Fatalf("proof.VerifyConsistency: %v", err)
		}
		// A checkpoint signed with another key does not open.
		forged := signCheckpoint(t, newKeys(t).skey, size, root)
		if _, err := note.Open(forged, note.VerifierList(verifier)); err == nil {
			t.Fatal("a checkpoint signed by another key opened")
		}
	})
}

func openCheckpoint(t *testing.T, signed []byte, v note.Verifier) (int64, tlog.Hash) {
	t.Helper()
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint signature: %v", err)
	}
	var cp tlogfmt.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		t.Fatal(err)
	}
	if cp.Origin != testOrigin || len(cp.Hash) != tlog.HashSize {
		t.Fatalf("checkpoint %q", n.Text)
	}
	return int64(cp.Size), tlog.Hash(cp.Hash)
}

// signCheckpoint signs a checkpoint of any size and root with skey.
func signCheckpoint(t testing.TB, skey string, size int64, root tlog.Hash) []byte {
	t.Helper()
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	body := tlogfmt.Checkpoint{Origin: testOrigin, Size: uint64(size), Hash: root[:]}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// bigEvent is an event too large for one entry: the log stores it beside
// and logs a payload_ref.
func bigEvent(i int) *audit.Event {
	e := event(i)
	e.Unmapped = map[string]any{}
	for k := range 30 {
		e.Unmapped[fmt.Sprintf("k%02d", k)] = strings.Repeat("z", 3000)
	}
	return e
}

const (
	tamperSize  = 600
	payloadAt   = 450 // the entry holding a payload_ref
	firstCkSize = 300
)

// verifiedLog is a log of tamperSize entries, one of them oversized, with
// checkpoints at firstCkSize and tamperSize, verified once with its state
// kept in statePath.
func verifiedLog(t *testing.T, db *store.DB) (ts *testServer, statePath string) {
	t.Helper()
	ctx := context.Background()
	ts = newTestServer(t, db, newKeys(t), audit.APIConfig{})
	appendAndCheckpoint(t, ts.client, 0, firstCkSize)
	appendHTTP(t, ts.client, firstCkSize, payloadAt-firstCkSize)
	if r, err := ts.client.Append(ctx, []*audit.Event{bigEvent(payloadAt)}); err != nil || r.FirstIndex != payloadAt {
		t.Fatalf("append the oversized event: %v", err)
	}
	appendHTTP(t, ts.client, payloadAt+1, tamperSize-payloadAt-1)
	if _, err := ts.client.IssueCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	statePath = filepath.Join(t.TempDir(), "state", "audit.json")
	res, err := audit.Verify(ctx, audit.HTTPSource(ts.client), audit.VerifyOptions{
		VerifierKey: ts.keys.vkey, StatePath: statePath, Payloads: true})
	if err != nil {
		t.Fatalf("verify the untampered log: %v", err)
	}
	if res.Entries != tamperSize || res.Payloads != 1 || !res.StateSaved || res.Checkpoint.Size != tamperSize {
		t.Fatalf("first verification: %+v", res)
	}
	return ts, statePath
}

func readEntry(t testing.TB, db *store.DB, idx int64) []byte {
	t.Helper()
	var data []byte
	if err := db.QueryRowContext(context.Background(), "SELECT data FROM audit_entries WHERE idx = ?", idx).Scan(&data); err != nil {
		t.Fatal(err)
	}
	return data
}

func writeEntry(t testing.TB, db *store.DB, idx int64, data []byte) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), "UPDATE audit_entries SET data = ? WHERE idx = ?", data, idx); err != nil {
		t.Fatal(err)
	}
}

// flipByte returns a copy of data with one byte changed in its middle.
func flipByte(data []byte) []byte {
	out := bytes.Clone(data)
	out[len(out)/2] ^= 0x01
	return out
}

// memHashes is a tlog.HashReader over a map, for recomputing trees in tests.
type memHashes map[int64]tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := m[x]
		if !ok {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = h
	}
	return out, nil
}

// rewriteHashes recomputes the stored hashes of every record from `from`
// on from the entries as they are now, as an attacker covering up an
// edit would.
func rewriteHashes(t testing.TB, db *store.DB, size, from int64) {
	t.Helper()
	ctx := context.Background()
	hashes := memHashes{}
	for i := int64(0); i < size; i++ {
		hs, err := tlog.StoredHashes(i, readEntry(t, db, i), hashes)
		if err != nil {
			t.Fatal(err)
		}
		var packed []byte
		for j, h := range hs {
			hashes[tlog.StoredHashIndex(0, i)+int64(j)] = h
			packed = append(packed, h[:]...)
		}
		if i >= from {
			if _, err := db.ExecContext(ctx, "UPDATE audit_hashes SET hashes = ? WHERE record = ?", packed, i); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// freshServer serves the same store from a new Log with empty caches, as
// a restarted or second replica would.
func freshServer(t testing.TB, ts *testServer) *audit.Client {
	t.Helper()
	l := startLog(t, ts.db, ts.keys, audit.Config{})
	return newClient(t, serveLog(t, l, ts.auth, audit.APIConfig{}), ts.cred)
}

// otherHistory is a log with the same key and origin as ts's but another
// history of size entries, of which the first `same` equal ts's.
func otherHistory(t testing.TB, d store.Driver, keys testKeys, same, size int) *audit.Client {
	t.Helper()
	ots := newTestServer(t, storetest.Open(t, d), keys, audit.APIConfig{})
	appendHTTP(t, ots.client, 0, same)
	appendHTTP(t, ots.client, 100_000, size-same)
	if _, err := ots.client.IssueCheckpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ots.client
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// tamper changes the log and returns the client to verify through.
		tamper    func(t *testing.T, ts *testServer, d store.Driver) *audit.Client
		wantIndex int64 // -1: no entry is named
		wantIs    error
		wantMsg   string
	}{
		{"one byte of an entry", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			writeEntry(t, ts.db, 123, flipByte(readEntry(t, ts.db, 123)))
			return ts.client
		}, 123, audit.ErrRootMismatch, "entry 123 does not match the log"},
		{"one byte of an entry, fresh replica", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			writeEntry(t, ts.db, 511, flipByte(readEntry(t, ts.db, 511)))
			return freshServer(t, ts)
		}, 511, audit.ErrRootMismatch, "entry 511 does not match the log"},
		{"deleted entry", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_entries WHERE idx = ?", 57); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, 57, audit.ErrEntryMissing, "entry 57 is missing"},
		{"deleted last entry", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_entries WHERE idx = ?", tamperSize-1); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, tamperSize - 1, audit.ErrEntryMissing, "is missing"},
		{"deleted entry after a modified one", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			writeEntry(t, ts.db, 30, flipByte(readEntry(t, ts.db, 30)))
			if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_entries WHERE idx = ?", 40); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, 30, audit.ErrRootMismatch, "entry 30 does not match"},
		{"two entries swapped", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			a, b := readEntry(t, ts.db, 200), readEntry(t, ts.db, 300)
			writeEntry(t, ts.db, 200, b)
			writeEntry(t, ts.db, 300, a)
			return ts.client
		}, 200, audit.ErrRootMismatch, "entry 200 does not match the log"},
		{"payload replaced", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "UPDATE audit_blobs SET data = ?", []byte(`{"class_uid":3002}`)); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, payloadAt, nil, fmt.Sprintf("entry %d refers to payload", payloadAt)},
		{"payload deleted", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_blobs"); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, payloadAt, nil, "which is missing"},
		{"entry and its hashes rewritten together", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			writeEntry(t, ts.db, 321, flipByte(readEntry(t, ts.db, 321)))
			rewriteHashes(t, ts.db, tamperSize, 321)
			return freshServer(t, ts)
		}, -1, audit.ErrRootMismatch, "the checkpoint signs"},
		{"leaf hash storage corrupt", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "UPDATE audit_hashes SET hashes = ? WHERE record = ?", make([]byte, 32), 100); err != nil {
				t.Fatal(err)
			}
			return freshServer(t, ts)
		}, -1, audit.ErrTilesInconsistent, "hash tiles"},
		{"fork: same size, forged root", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			var root tlog.Hash
			rand.Read(root[:])
			forged := signCheckpoint(t, ts.keys.skey, tamperSize, root)
			if _, err := ts.db.ExecContext(ctx, "UPDATE audit_checkpoints SET root = ?, note = ? WHERE size = ?", root[:], forged, tamperSize); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, -1, audit.ErrFork, "fork"},
		{"fork: same size, other history", func(t *testing.T, ts *testServer, d store.Driver) *audit.Client {
			return otherHistory(t, d, ts.keys, firstCkSize, tamperSize)
		}, -1, audit.ErrFork, "fork"},
		{"fork: larger rewritten history", func(t *testing.T, ts *testServer, d store.Driver) *audit.Client {
			return otherHistory(t, d, ts.keys, firstCkSize, tamperSize+100)
		}, -1, audit.ErrFork, "consistency proof fails"},
		{"rolled back to an older checkpoint", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_checkpoints WHERE size = ?", tamperSize); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, -1, audit.ErrRollback, "shrank"},
		{"checkpoint signed by another key", func(t *testing.T, ts *testServer, _ store.Driver) *audit.Client {
			ck, err := ts.log.LatestCheckpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			forged := signCheckpoint(t, newKeys(t).skey, ck.Size, ck.Root)
			if _, err := ts.db.ExecContext(ctx, "UPDATE audit_checkpoints SET note = ? WHERE size = ?", forged, ck.Size); err != nil {
				t.Fatal(err)
			}
			return ts.client
		}, -1, nil, "verify checkpoint"},
	}
	for _, d := range storetest.Backends {
		for _, tt := range tests {
			t.Run(string(d)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ts, statePath := verifiedLog(t, storetest.Open(t, d))
				stateBefore, err := os.ReadFile(statePath)
				if err != nil {
					t.Fatal(err)
				}
				c := tt.tamper(t, ts, d)
				_, err = audit.Verify(ctx, audit.HTTPSource(c), audit.VerifyOptions{
					VerifierKey: ts.keys.vkey, StatePath: statePath, Payloads: true})
				if err == nil {
					t.Fatal("verification passed")
				}
				t.Logf("verify: %v", err)
				var ee *audit.EntryError
				switch {
				case tt.wantIndex >= 0 && !errors.As(err, &ee):
					t.Fatalf("error names no entry: %v", err)
				case tt.wantIndex >= 0 && ee.Index != tt.wantIndex:
					t.Fatalf("error names entry %d, want %d: %v", ee.Index, tt.wantIndex, err)
				case tt.wantIndex < 0 && errors.As(err, &ee):
					t.Fatalf("error names entry %d, want none: %v", ee.Index, err)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Fatalf("error is not %v: %v", tt.wantIs, err)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("error %q does not say %q", err, tt.wantMsg)
				}
				stateAfter, err := os.ReadFile(statePath)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(stateBefore, stateAfter) {
					t.Fatal("a failed verification changed the state file")
				}
			})
		}
	}
}

// TestVerifyFollowsAGrowingLog: each run proves the new checkpoint extends
// the last one verified and records it.
func TestVerifyFollowsAGrowingLog(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ts := newTestServer(t, db, newKeys(t), audit.APIConfig{})
		statePath := filepath.Join(t.TempDir(), "state.json")
		opts := audit.VerifyOptions{VerifierKey: ts.keys.vkey, StatePath: statePath}
		sizes := []int{0, 1, 255, 256, 257, 700}
		prev := int64(-1)
		for _, n := range sizes {
			size, err := ts.log.Size(ctx)
			if err != nil {
				t.Fatal(err)
			}
			appendHTTP(t, ts.client, int(size), n-int(size))
			if _, err := ts.client.IssueCheckpoint(ctx); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var last [2]int64
			opts.Progress = func(done, total int64) {
				mu.Lock()
				last = [2]int64{done, total}
				mu.Unlock()
			}
			res, err := audit.Verify(ctx, audit.HTTPSource(ts.client), opts)
			if err != nil {
				t.Fatalf("size %d: %v", n, err)
			}
			if res.Entries != int64(n) || res.Checkpoint.Size != int64(n) {
				t.Fatalf("size %d: verified %d entries of %d", n, res.Entries, res.Checkpoint.Size)
			}
			if n > 0 && last != [2]int64{int64(n), int64(n)} {
				t.Fatalf("size %d: last progress %v", n, last)
			}
			switch {
			case prev < 0 && res.Previous != nil:
				t.Fatalf("first run has a previous checkpoint")
			case prev >= 0 && (res.Previous == nil || res.Previous.Size != prev):
				t.Fatalf("size %d: previous %+v, want size %d", n, res.Previous, prev)
			}
			want := fmt.Sprintf("verified %d entries, checkpoint size %d root ", n, n)
			if !strings.HasPrefix(res.Summary(), want) {
				t.Fatalf("summary %q", res.Summary())
			}
			if prev >= 0 && !strings.HasSuffix(res.Summary(), fmt.Sprintf("consistent with previous size %d", prev)) {
				t.Fatalf("summary %q", res.Summary())
			}
			st, err := audit.LoadState(statePath)
			if err != nil || st.Size != int64(n) || st.VerifierKey != ts.keys.vkey || st.Origin != testOrigin {
				t.Fatalf("state after size %d: %+v, %v", n, st, err)
			}
			prev = int64(n)
		}
	})
}

func TestVerifyTrustOnFirstUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	appendAndCheckpoint(t, ts.client, 0, 10)
	statePath := filepath.Join(t.TempDir(), "state.json")
	var warnings []string
	opts := audit.VerifyOptions{StatePath: statePath, Warn: func(m string) { warnings = append(warnings, m) }}
	res, err := audit.Verify(ctx, audit.HTTPSource(ts.client), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TrustedOnFirstUse || res.VerifierKey != ts.keys.vkey || len(warnings) != 1 ||
		!strings.Contains(warnings[0], "trusting") || !strings.Contains(warnings[0], ts.keys.vkey) {
		t.Fatalf("first use: %+v, warnings %q", res, warnings)
	}
	// The second run uses the pinned key, silently.
	warnings = nil
	if res, err = audit.Verify(ctx, audit.HTTPSource(ts.client), opts); err != nil || res.TrustedOnFirstUse || len(warnings) != 0 {
		t.Fatalf("second run: %+v, %v, warnings %q", res, err, warnings)
	}
	// A log that now publishes another key (same origin) is refused, and so
	// is a key given that differs from the pinned one.
	other := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	if _, err := audit.Verify(ctx, audit.HTTPSource(other.client), opts); !errors.Is(err, audit.ErrKeyChanged) {
		t.Fatalf("changed key: %v", err)
	}
	opts.VerifierKey = other.keys.vkey
	if _, err := audit.Verify(ctx, audit.HTTPSource(ts.client), opts); !errors.Is(err, audit.ErrKeyChanged) {
		t.Fatalf("given key differs from the pinned one: %v", err)
	}
	// Without a state file there is nothing to pin, and the warning says so.
	warnings = nil
	if _, err := audit.Verify(ctx, audit.HTTPSource(ts.client), audit.VerifyOptions{Warn: opts.Warn}); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "not pinned") {
		t.Fatalf("warnings %q", warnings)
	}
}

func TestVerifyRefusesWrongOriginAndKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	appendAndCheckpoint(t, ts.client, 0, 3)
	tests := []struct {
		name string
		opts audit.VerifyOptions
	}{
		{"other origin", audit.VerifyOptions{VerifierKey: ts.keys.vkey, Origin: "bulwark.test/other"}},
		{"other key", audit.VerifyOptions{VerifierKey: newKeys(t).vkey}},
		{"malformed key", audit.VerifyOptions{VerifierKey: "not a key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := audit.Verify(ctx, audit.HTTPSource(ts.client), tt.opts); err == nil {
				t.Fatal("verification passed")
			}
		})
	}
	// A state file of another log is refused.
	statePath := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(statePath, []byte(`{"origin":"elsewhere"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(ctx, audit.HTTPSource(ts.client), audit.VerifyOptions{VerifierKey: ts.keys.vkey, StatePath: statePath}); err == nil ||
		!strings.Contains(err.Error(), "elsewhere") {
		t.Fatalf("state of another log: %v", err)
	}
	if err := os.WriteFile(statePath, []byte(`{"origin":"`+testOrigin+`","surprise":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LoadState(statePath); err == nil {
		t.Fatal("a state file with an unknown field loaded")
	}
}

func TestDefaultStatePath(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	t.Setenv("HOME", "/home/u")
	tests := []struct{ origin, want string }{
		{"bulwark.example/audit", "bulwark.example_audit.json"},
		{"../../etc/passwd", "_.._.._etc_passwd.json"},
		{"", "_.json"},
		{"a b\x00c", "a_b_c.json"},
	}
	for _, tt := range tests {
		got, err := audit.DefaultStatePath(tt.origin)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(got) != tt.want || filepath.Dir(got) != filepath.Join("/cfg", "bulwark", "audit-state") {
			t.Errorf("DefaultStatePath(%q) = %q, want .../%s", tt.origin, got, tt.want)
		}
	}
}

// memSource is a log held in memory, built with tlog, for verifying large
// trees without a database.
type memSource struct {
	note    []byte
	entries [][]byte
	hashes  []tlog.Hash // every stored hash, by stored-hash index
}

func newMemSource(tb testing.TB, keys testKeys, n int) *memSource {
	tb.Helper()
	m := &memSource{entries: make([][]byte, n), hashes: make([]tlog.Hash, 0, tlog.StoredHashCount(int64(n)))}
	for i := range n {
		m.entries[i] = fmt.Appendf(nil, `{"class_uid":3002,"activity_id":1,"metadata":{"uid":"evt-%d"}}`, i)
		hs, err := tlog.StoredHashes(int64(i), m.entries[i], m)
		if err != nil {
			tb.Fatal(err)
		}
		m.hashes = append(m.hashes, hs...)
	}
	root, err := tlog.TreeHash(int64(n), m)
	if err != nil {
		tb.Fatal(err)
	}
	m.note = signCheckpoint(tb, keys.skey, int64(n), root)
	return m
}

func (m *memSource) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memSource) Checkpoint(context.Context) ([]byte, error) { return m.note, nil }

func (m *memSource) Entries(_ context.Context, treeSize, start int64, limit int) ([]audit.Entry, error) {
	end := min(start+int64(limit), treeSize, int64(len(m.entries)))
	out := make([]audit.Entry, 0, max(end-start, 0))
	for i := start; i < end; i++ {
		out = append(out, audit.Entry{Index: i, Data: m.entries[i]})
	}
	return out, nil
}

func (m *memSource) ReadTiles(_ context.Context, tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := tlog.ReadTileData(t, m)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (m *memSource) Blob(context.Context, string) ([]byte, error) { return nil, audit.ErrNotFound }

func TestVerifyLargeLogInMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys := newKeys(t)
	const n = 70_000 // three tile levels
	m := newMemSource(t, keys, n)
	res, err := audit.Verify(ctx, m, audit.VerifyOptions{VerifierKey: keys.vkey})
	if err != nil || res.Entries != n {
		t.Fatalf("verify: %+v, %v", res, err)
	}
	for _, bad := range []int64{0, 255, 256, 65535, 65536, n - 1} {
		orig := m.entries[bad]
		m.entries[bad] = flipByte(orig)
		_, err := audit.Verify(ctx, m, audit.VerifyOptions{VerifierKey: keys.vkey})
		m.entries[bad] = orig
		var ee *audit.EntryError
		if !errors.As(err, &ee) || ee.Index != bad {
			t.Fatalf("entry %d altered: %v", bad, err)
		}
	}
}

// BenchmarkVerifyMillion verifies a log of a million entries and reports
// the peak live heap the verification adds beyond the in-memory log:
// it stays in the megabytes, not proportional to the entries.
func BenchmarkVerifyMillion(b *testing.B) {
	ctx := context.Background()
	keys := newKeys(b)
	m := newMemSource(b, keys, 1_000_000)
	b.ResetTimer()
	var peak uint64
	for range b.N {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop := make(chan struct{})
		done := make(chan uint64)
		go func() {
			var top uint64
			var ms runtime.MemStats
			for {
				runtime.GC() // live heap, not garbage awaiting collection
				runtime.ReadMemStats(&ms)
				top = max(top, ms.HeapAlloc)
				select {
				case <-stop:
					done <- top
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		if _, err := audit.Verify(ctx, m, audit.VerifyOptions{VerifierKey: keys.vkey}); err != nil {
			b.Fatal(err)
		}
		close(stop)
		if top := <-done; top > base.HeapAlloc {
			peak = max(peak, top-base.HeapAlloc)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// TestVerifyConsistencyFromTiles: a source without a consistency-proof
// API (a bundle, here a log in memory) is checked against the state with a
// proof computed from its authenticated tiles.
func TestVerifyConsistencyFromTiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys := newKeys(t)
	statePath := filepath.Join(t.TempDir(), "state.json")
	opts := audit.VerifyOptions{VerifierKey: keys.vkey, StatePath: statePath}
	if _, err := audit.Verify(ctx, newMemSource(t, keys, 1000), opts); err != nil {
		t.Fatal(err)
	}
	// The same entries and more: consistent.
	res, err := audit.Verify(ctx, newMemSource(t, keys, 3000), opts)
	if err != nil || res.Previous == nil || res.Previous.Size != 1000 {
		t.Fatalf("extension: %+v, %v", res, err)
	}
	// A longer log whose entry 5 differs, validly signed: a fork.
	forked := newMemSource(t, keys, 5000)
	forked.entries[5] = []byte(`{"rewritten":true}`)
	rebuilt := &memSource{entries: forked.entries}
	for i, e := range rebuilt.entries {
		hs, err := tlog.StoredHashes(int64(i), e, rebuilt)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt.hashes = append(rebuilt.hashes, hs...)
	}
	root, err := tlog.TreeHash(int64(len(rebuilt.entries)), rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt.note = signCheckpoint(t, keys.skey, int64(len(rebuilt.entries)), root)
	if _, err := audit.Verify(ctx, rebuilt, opts); !errors.Is(err, audit.ErrFork) {
		t.Fatalf("rewritten longer history: %v", err)
	}
	// And a shorter one is a rollback.
	if _, err := audit.Verify(ctx, newMemSource(t, keys, 2999), opts); !errors.Is(err, audit.ErrRollback) {
		t.Fatalf("shorter log: %v", err)
	}
}
