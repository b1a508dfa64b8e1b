package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestUseOnce(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db)
		srv, ctx := env.srv, context.Background()
		until := env.clock.Now().Add(time.Minute)

		t.Run("concurrent uses of one identifier: exactly one wins", func(t *testing.T) {
			var ok, replays, other atomic.Int32
			var wg sync.WaitGroup
			for range 200 {
				wg.Go(func() {
					switch err := srv.useOnce(ctx, "dpop", "jti-same", until); {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, errReplay):
						replays.Add(1)
					default:
						other.Add(1)
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if ok.Load() != 1 || replays.Load() != 199 {
				t.Fatalf("%d accepted, %d replays, %d errors; want 1, 199, 0", ok.Load(), replays.Load(), other.Load())
			}
		})
		t.Run("distinct identifiers all succeed", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 600 { // more than one batch
				wg.Go(func() {
					if err := srv.useOnce(ctx, "client_assertion", fmt.Sprintf("jti-%d", i), until); err != nil {
						t.Errorf("jti-%d: %v", i, err)
					}
				})
			}
			wg.Wait()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM identity_replay WHERE namespace = 'client_assertion'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 600 {
				t.Fatalf("%d rows stored, want 600", n)
			}
		})
		t.Run("namespaces are separate", func(t *testing.T) {
			for _, ns := range []string{"ns-a", "ns-b"} {
				if err := srv.useOnce(ctx, ns, "shared", until); err != nil {
					t.Fatalf("%s: %v", ns, err)
				}
			}
			if err := srv.useOnce(ctx, "ns-a", "shared", until); !errors.Is(err, errReplay) {
				t.Fatalf("replay in ns-a: %v, want errReplay", err)
			}
		})
		t.Run("long identifiers", func(t *testing.T) {
			long := strings.Repeat("x", 5000)
			for _, tc := range []struct {
				jti    string
				replay bool
			}{{long + "1", false}, {long + "2", false}, {long + "1", true}} {
				err := srv.useOnce(ctx, "long", tc.jti, until)
				if tc.replay != errors.Is(err, errReplay) || (!tc.replay && err != nil) {
					t.Fatalf("replay=%v: got %v", tc.replay, err)
				}
			}
		})
		t.Run("bad input", func(t *testing.T) {
			for _, tc := range [][2]string{{"", "jti"}, {"ns", ""}} {
				if err := srv.useOnce(ctx, tc[0], tc[1], until); err == nil || errors.Is(err, errReplay) {
					t.Errorf("useOnce(%q, %q) = %v, want an input error", tc[0], tc[1], err)
				}
			}
		})
		t.Run("callers that give up do not stall the others", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 300 {
				wg.Go(func() {
					if i%3 == 0 {
						short, cancel := context.WithTimeout(ctx, time.Duration(i%7)*100*time.Microsecond)
						defer cancel()
						_ = srv.useOnce(short, "giveup", fmt.Sprintf("g-%d", i), until)
						return
					}
					if err := srv.useOnce(ctx, "giveup", fmt.Sprintf("g-%d", i), until); err != nil {
						t.Errorf("g-%d: %v", i, err)
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("callers stalled")
			}
			b := &srv.mgmtState().replay
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.leading || len(b.queue) != 0 {
				t.Fatalf("batcher left busy: leading=%v, %d queued", b.leading, len(b.queue))
			}
		})
		t.Run("expired identifiers are pruned", func(t *testing.T) {
			if err := srv.useOnce(ctx, "prune", "short-lived", env.clock.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := srv.useOnce(ctx, "prune", "long-lived", env.clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			env.clock.Advance(time.Minute)
			if err := srv.prune(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM identity_replay WHERE namespace = 'prune'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d rows left, want 1", n)
			}
			if err := srv.useOnce(ctx, "prune", "long-lived", env.clock.Now().Add(time.Hour)); !errors.Is(err, errReplay) {
				t.Fatalf("unexpired identifier after prune: %v, want errReplay", err)
			}
		})
	})
}

// BenchmarkUseOnce measures the replay store under the token endpoint's
// concurrency: many requests at once, each recording one new identifier.
func BenchmarkUseOnce(b *testing.B) {
	for _, d := range storetest.Backends {
		b.Run(string(d), func(b *testing.B) {
			env := newTestEnv(b, storetest.Open(b, d))
			ctx, until := context.Background(), time.Now().Add(time.Hour)
			var n atomic.Int64
			b.SetParallelism(64) // 64 concurrent callers per CPU
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := env.srv.useOnce(ctx, "bench", fmt.Sprintf("jti-%d", n.Add(1)), until); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "uses/s")
		})
	}
}
