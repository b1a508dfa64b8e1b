package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// The conformance suite: every behaviour the domain packages rely on, on
// every backend.

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL, b "+blobType(db)+")"); err != nil {
			t.Fatalf("create table: %v", err)
		}

		t.Run("binary and large integers round-trip", func(t *testing.T) {
			blob := make([]byte, 256)
			for i := range blob {
				blob[i] = byte(i)
			}
			if _, err := db.ExecContext(ctx, "INSERT INTO kv (k, v, b) VALUES (?, ?, ?)", "bin", int64(math.MaxInt64), blob); err != nil {
				t.Fatal(err)
			}
			var v int64
			var got []byte
			if err := db.QueryRowContext(ctx, "SELECT v, b FROM kv WHERE k = ?", "bin").Scan(&v, &got); err != nil {
				t.Fatal(err)
			}
			if v != math.MaxInt64 || !bytes.Equal(got, blob) {
				t.Fatalf("round trip: got v=%d b=%x", v, got)
			}
		})

		t.Run("commit and rollback", func(t *testing.T) {
			if err := db.InTx(ctx, func(tx *store.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO kv (k, v) VALUES (?, ?)", "committed", 1)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("boom")
			err := db.InTx(ctx, func(tx *store.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO kv (k, v) VALUES (?, ?)", "rolled-back", 1); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("InTx error = %v, want boom", err)
			}
			for k, want := range map[string]int{"committed": 1, "rolled-back": 0} {
				var n int
				if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM kv WHERE k = ?", k).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != want {
					t.Errorf("rows for %q = %d, want %d", k, n, want)
				}
			}
		})

		t.Run("unique violation is recognised", func(t *testing.T) {
			_, err := db.ExecContext(ctx, "INSERT INTO kv (k, v) VALUES (?, ?)", "committed", 2)
			if !store.IsUniqueViolation(err) {
				t.Fatalf("duplicate insert: err = %v, want a unique violation", err)
			}
			if store.IsUniqueViolation(errors.New("other")) {
				t.Fatal("plain error reported as unique violation")
			}
		})

		t.Run("placeholders inside quotes are kept", func(t *testing.T) {
			var s string
			if err := db.QueryRowContext(ctx, "SELECT 'what?' || ?", "!").Scan(&s); err != nil {
				t.Fatal(err)
			}
			if s != "what?!" {
				t.Fatalf("got %q", s)
			}
		})

		t.Run("concurrent transactions serialise", func(t *testing.T) {
			if _, err := db.ExecContext(ctx, "INSERT INTO kv (k, v) VALUES (?, ?)", "counter", 0); err != nil {
				t.Fatal(err)
			}
			const workers, each = 8, 10
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						err := db.InTx(ctx, func(tx *store.Tx) error {
							var v int64
							q := "SELECT v FROM kv WHERE k = ?"
							if tx.Driver() == store.Postgres {
								q += " FOR UPDATE"
							}
							if err := tx.QueryRowContext(ctx, q, "counter").Scan(&v); err != nil {
								return err
							}
							_, err := tx.ExecContext(ctx, "UPDATE kv SET v = ? WHERE k = ?", v+1, "counter")
							return err
						})
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var v int64
			if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = ?", "counter").Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != workers*each {
				t.Fatalf("counter = %d, want %d (lost update)", v, workers*each)
			}
		})

		t.Run("schema is migrated", func(t *testing.T) {
			v, err := db.SchemaVersion(ctx)
			if err != nil || v < 1 {
				t.Fatalf("SchemaVersion = %d, %v", v, err)
			}
			var size int64
			if err := db.QueryRowContext(ctx, "SELECT size FROM audit_head WHERE id = 1").Scan(&size); err != nil || size != 0 {
				t.Fatalf("audit_head: size=%d err=%v", size, err)
			}
		})
	})
}

func TestMigrationsAreIdempotentAcrossReopens(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			opts := storetest.Options(t, d)
			ctx := context.Background()
			// Two replicas starting at once must not both apply a migration.
			var wg sync.WaitGroup
			dbs := make([]*store.DB, 3)
			errs := make([]error, 3)
			for i := range dbs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					dbs[i], errs[i] = store.Open(ctx, opts)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("open %d: %v", i, err)
				}
				defer dbs[i].Close()
			}
			var n int
			if err := dbs[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM audit_head").Scan(&n); err != nil || n != 1 {
				t.Fatalf("audit_head rows = %d, %v; want exactly 1", n, err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts store.Options
		want string
	}{
		{"unknown driver", store.Options{Driver: "mysql"}, `unknown driver "mysql"`},
		{"sqlite without path", store.Options{Driver: store.SQLite}, "no database path"},
		{"postgres without dsn", store.Options{Driver: store.Postgres}, "no DSN"},
		{"postgres unreachable", store.Options{Driver: store.Postgres, DSN: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"}, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := store.Open(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func blobType(db *store.DB) string {
	if db.Driver() == store.Postgres {
		return "BYTEA"
	}
	return "BLOB"
}

// TestAsyncCommit checks InTxAsyncCommit on both backends: it commits and
// rolls back like InTx, and leaves no connection of the pool relaxed.
func TestAsyncCommit(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE seen (k TEXT PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.InTxAsyncCommit(ctx, func(tx *store.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO seen (k) VALUES (?)", fmt.Sprint(i))
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		errBoom := errors.New("boom")
		err := db.InTxAsyncCommit(ctx, func(tx *store.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO seen (k) VALUES (?)", "rolled-back"); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("InTxAsyncCommit = %v, want boom", err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM seen").Scan(&n); err != nil || n != 20 {
			t.Fatalf("%d rows, %v; want 20", n, err)
		}
		// Every pooled connection is back to full durability.
		conns := make([]*sql.Conn, 16)
		for i := range conns {
			c, err := db.SQL().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
			q, want := "PRAGMA synchronous", "2" // FULL
			if db.Driver() == store.Postgres {
				q, want = "SHOW synchronous_commit", "on"
			}
			var got string
			if err := c.QueryRowContext(ctx, q).Scan(&got); err != nil || got != want {
				t.Errorf("connection %d: %s = %q, %v; want %q", i, q, got, err, want)
			}
		}
		for _, c := range conns {
			c.Close()
		}
	})
}

// TestSQLitePathWithURICharacters opens databases whose paths hold the
// characters that SQLite URI filenames give a meaning to: each must be its
// own file, at exactly that path.
func TestSQLitePathWithURICharacters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	for _, name := range []string{"a#1.db", "a#2.db", "b?x=1.db", "c%41.db"} {
		path := filepath.Join(dir, name)
		db, err := store.Open(ctx, store.Options{Driver: store.SQLite, Path: path})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE marker (name TEXT)"); err != nil {
			t.Fatalf("%s: %v (another file was opened)", name, err)
		}
		db.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: database not at its path: %v", name, err)
		}
	}
}
