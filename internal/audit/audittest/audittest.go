// Package audittest runs a real audit log for the tests of the components
// that write to it, and reads back what they wrote.
package audittest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Origin is the checkpoint origin of the logs Start makes.
const Origin = "test.bulwark.local/audit"

// Start runs an audit log on db until the test ends, and returns it once
// it is ready. Checkpoints are issued only on demand.
func Start(t testing.TB, db *store.DB) *audit.Log {
	t.Helper()
	skey, vkey, err := audit.GenerateSigningKey(Origin)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.New(audit.Config{Origin: Origin, CheckpointInterval: time.Hour, CommitBatch: 1024, MaxEventBytes: 1 << 20},
		audit.Deps{DB: db, SignerKey: skey, VerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); !l.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("audit log not ready")
		}
	}
	return l
}

// Events returns every event in l, decoded, in log order.
func Events(t testing.TB, l *audit.Log) []audit.Event {
	t.Helper()
	ctx := context.Background()
	size, err := l.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for start := int64(0); start < size; {
		entries, err := l.Entries(ctx, start, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			break
		}
		for _, e := range entries {
			var ev audit.Event
			if err := json.Unmarshal(e.Data, &ev); err != nil {
				t.Fatalf("audit entry %d: %v", e.Index, err)
			}
			out = append(out, ev)
		}
		start = entries[len(entries)-1].Index + 1
	}
	return out
}
