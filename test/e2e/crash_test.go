package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// TestCrashDuringAppendsLosesNothing kills the server with SIGKILL while
// many clients append, restarts it, and checks that every acknowledged
// event is in the log exactly once, that the tree verifies, and that the
// tree after the crash extends the one signed before it (no fork). Several
// rounds, on both backends.
func TestCrashDuringAppendsLosesNothing(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			cfg := fmt.Sprintf("data_dir: %s\nlisten: 127.0.0.1:0\naudit:\n  checkpoint_interval: 1s\n", dataDir)
			if backend == "postgres" {
				cfg += fmt.Sprintf("store:\n  driver: postgres\n  dsn: %q\n", storetest.NewPostgresSchema(t))
			}
			cfgPath := filepath.Join(dataDir, "bulwark.yaml")
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}

			acked := map[string]int64{} // event uid -> index the server acknowledged
			var lastCk *audit.Checkpoint
			var verifier note.Verifier
			const rounds = 3
			for round := 0; round < rounds; round++ {
				p := startProc(t, "server", "--config", cfgPath)
				url := listenURL(t, p, 20*time.Second)
				ep := newEndpoint(t, url, filepath.Join(dataDir, "tls", "ca.pem"), filepath.Join(dataDir, "admin.credential"))
				ep.waitReady(t, 20*time.Second)
				if verifier == nil {
					verifier = fetchVerifier(t, ep)
				}

				// The tree after a restart extends every checkpoint seen before.
				ck := fetchCheckpoint(t, ep, verifier)
				if lastCk != nil {
					checkConsistent(t, ep, lastCk, ck)
				}

				// Load, then SIGKILL in the middle of it.
				ctx, cancel := context.WithCancel(context.Background())
				var (
					mu sync.Mutex
					wg sync.WaitGroup
				)
				for w := 0; w < 8; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; ctx.Err() == nil; i++ {
							n := 1 + (w+i)%5
							uids := make([]string, n)
							var evs []string
							for k := range uids {
								uids[k] = fmt.Sprintf("r%d-w%d-%d-%d", round, w, i, k)
								evs = append(evs, fmt.Sprintf(`{"class_uid":6003,"activity_id":1,"status_id":1,"metadata":{"uid":%q}}`, uids[k]))
							}
							resp, err := ep.do(ctx, http.MethodPost, "/v1/audit/events", strings.NewReader(`{"events":[`+strings.Join(evs, ",")+`]}`))
							if err != nil {
								continue // the server died: not acknowledged
							}
							var ar audit.AppendResponse
							err = json.NewDecoder(resp.Body).Decode(&ar)
							resp.Body.Close()
							if resp.StatusCode != http.StatusCreated || err != nil {
								continue
							}
							mu.Lock()
							for k, uid := range uids {
								acked[uid] = ar.FirstIndex + int64(k)
							}
							mu.Unlock()
						}
					}()
				}
				time.Sleep(time.Duration(800+300*round) * time.Millisecond)
				lastCk = fetchCheckpoint(t, ep, verifier)
				time.Sleep(200 * time.Millisecond)
				err := p.stop(t, syscall.SIGKILL, 10*time.Second)
				cancel()
				wg.Wait()
				if !killedBySignal(err, syscall.SIGKILL) {
					t.Fatalf("round %d: server was not killed: %v", round, err)
				}
				mu.Lock()
				t.Logf("round %d: %d events acknowledged so far", round, len(acked))
				mu.Unlock()
			}

			// Final restart: everything acknowledged is there, once, where the
			// server said, and the whole log verifies.
			p := startProc(t, "server", "--config", cfgPath)
			url := listenURL(t, p, 20*time.Second)
			ep := newEndpoint(t, url, filepath.Join(dataDir, "tls", "ca.pem"), filepath.Join(dataDir, "admin.credential"))
			ep.waitReady(t, 20*time.Second)
			ck := fetchCheckpoint(t, ep, verifier)
			checkConsistent(t, ep, lastCk, ck)

			seen := map[string]int64{}
			var size int64
			for start := int64(0); ; start += 1000 {
				var page audit.EntriesResponse
				ep.getJSON(t, fmt.Sprintf("/v1/audit/entries?start=%d&limit=1000", start), &page)
				size = page.TreeSize
				for _, e := range page.Entries {
					ev, err := audit.DecodeEvent(e.Data)
					if err != nil {
						t.Fatalf("entry %d: %v", e.Index, err)
					}
					if ev.Metadata.UID == "" {
						continue // the server's own events (CA, policy bundles), not the test's
					}
					if prev, dup := seen[ev.Metadata.UID]; dup {
						t.Fatalf("event %s logged twice (entries %d and %d)", ev.Metadata.UID, prev, e.Index)
					}
					seen[ev.Metadata.UID] = e.Index
				}
				if start+1000 >= page.TreeSize {
					break
				}
			}
			if len(acked) == 0 {
				t.Fatal("no append was acknowledged: the load did not run")
			}
			for uid, idx := range acked {
				got, ok := seen[uid]
				if !ok {
					t.Fatalf("acknowledged event %s (index %d) is missing after the crash", uid, idx)
				}
				if got != idx {
					t.Fatalf("acknowledged event %s was at %d, now at %d", uid, idx, got)
				}
			}
			t.Logf("%d acknowledged events all present in a tree of %d", len(acked), size)

			// The operator's verifier agrees.
			stateFile := filepath.Join(t.TempDir(), "witness.json")
			verify := exec.Command(bulwarkBin, "audit", "verify", "--server", url,
				"--ca-cert", filepath.Join(dataDir, "tls", "ca.pem"),
				"--credential-file", filepath.Join(dataDir, "admin.credential"),
				"--key", verifierKey(t, ep), "--state", stateFile)
			var out bytes.Buffer
			verify.Stdout, verify.Stderr = &out, &out
			if err := verify.Run(); err != nil {
				t.Fatalf("bulwark audit verify after crashes: %v\n%s", err, out.String())
			}
			if err := p.stop(t, syscall.SIGTERM, 15*time.Second); !exitedCleanly(err) {
				t.Fatalf("server did not stop cleanly on SIGTERM: %v", err)
			}
		})
	}
}

func verifierKey(t *testing.T, ep *endpoint) string {
	t.Helper()
	resp, err := ep.do(context.Background(), http.MethodGet, "/v1/audit/key", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return strings.TrimSpace(b.String())
}

func fetchVerifier(t *testing.T, ep *endpoint) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(verifierKey(t, ep))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fetchCheckpoint(t *testing.T, ep *endpoint, v note.Verifier) *audit.Checkpoint {
	t.Helper()
	resp, err := ep.do(context.Background(), http.MethodGet, "/v1/audit/checkpoint", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	ck, err := audit.ParseCheckpoint(b.Bytes(), v.Name(), v)
	if err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, b.String())
	}
	return ck
}

func checkConsistent(t *testing.T, ep *endpoint, old, cur *audit.Checkpoint) {
	t.Helper()
	if cur.Size < old.Size {
		t.Fatalf("tree shrank from %d to %d", old.Size, cur.Size)
	}
	if old.Size == 0 {
		return
	}
	if cur.Size == old.Size {
		if cur.Root != old.Root {
			t.Fatalf("fork: two roots for size %d", cur.Size)
		}
		return
	}
	var cp audit.ConsistencyResponse
	ep.getJSON(t, fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", old.Size, cur.Size), &cp)
	proof := make(tlog.TreeProof, len(cp.Proof))
	for i, h := range cp.Proof {
		copy(proof[i][:], h)
	}
	if err := tlog.CheckTree(proof, cur.Size, cur.Root, old.Size, old.Root); err != nil {
		t.Fatalf("tree of %d is not an extension of the checkpoint of %d: %v", cur.Size, old.Size, err)
	}
}
