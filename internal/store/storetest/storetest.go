// Package storetest gives tests a real, isolated store on every backend:
// SQLite in t.TempDir() and PostgreSQL in a schema of its own, so tests run
// in parallel and never see each other's rows. PostgreSQL is found through
// BULWARK_TEST_POSTGRES (default the local server's "test" database); when it
// cannot be reached the test fails — it never skips.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
)

// DefaultPostgresDSN is used when BULWARK_TEST_POSTGRES is not set.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Backends lists every backend a store test must pass on.
var Backends = []store.Driver{store.SQLite, store.Postgres}

// PostgresDSN returns the DSN of the test PostgreSQL server.
func PostgresDSN() string {
	if dsn := os.Getenv("BULWARK_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return DefaultPostgresDSN
}

// ForEachBackend runs fn as a parallel subtest on a fresh store of every backend.
func ForEachBackend(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, d := range Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, Open(t, d))
		})
	}
}

// Open returns a migrated store of the given backend, closed (and for
// PostgreSQL, its schema dropped) when the test ends.
func Open(t testing.TB, d store.Driver) *store.DB {
	t.Helper()
	opts := Options(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, opts)
	if err != nil {
		t.Fatalf("open %s test store: %v", d, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Options returns store options for a fresh, empty database of backend d
// without opening it; for PostgreSQL the schema is created now and dropped
// when the test ends. Use it to open the same database several times (to
// simulate a restart or a second replica).
func Options(t testing.TB, d store.Driver) store.Options {
	t.Helper()
	switch d {
	case store.SQLite:
		return store.Options{Driver: store.SQLite, Path: filepath.Join(t.TempDir(), "bulwark.db")}
	case store.Postgres:
		return store.Options{Driver: store.Postgres, DSN: NewPostgresSchema(t)}
	default:
		t.Fatalf("unknown backend %q", d)
		return store.Options{}
	}
}

// NewPostgresSchema creates an empty schema on the test server and returns a
// DSN whose search_path selects it. The schema is dropped at cleanup.
func NewPostgresSchema(t testing.TB) string {
	t.Helper()
	base := PostgresDSN()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("PostgreSQL test server (BULWARK_TEST_POSTGRES=%q): %v", redactDSN(base), err)
	}
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL test server not reachable at %q: %v\n"+
			"start it with 'make test-deps' or point BULWARK_TEST_POSTGRES at one; store tests never skip",
			redactDSN(base), err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "bwtest_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	dsn, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("test DSN: %v", err)
	}
	return dsn
}

func withSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse BULWARK_TEST_POSTGRES: %w", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return dsn + " search_path=" + schema, nil
}

// redactDSN hides a password in a DSN before it is printed.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.String()
	}
	return dsn
}
