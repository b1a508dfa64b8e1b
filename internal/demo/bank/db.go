package bank

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// migrations are each service's schema, one statement list per version,
// applied in order at start. A service owns its database: no other service
// reads it.
var migrations = map[string][]string{
	"accounts": {
		`CREATE TABLE accounts (
			id              TEXT PRIMARY KEY,
			owner           TEXT NOT NULL,
			iban            TEXT NOT NULL UNIQUE,
			name            TEXT NOT NULL,
			currency        TEXT NOT NULL,
			opening_balance INTEGER NOT NULL,
			created_at      INTEGER NOT NULL
		);
		CREATE INDEX accounts_owner ON accounts(owner);`,
	},
	"payments": {
		`CREATE TABLE payments (
			id              TEXT PRIMARY KEY,
			owner           TEXT NOT NULL,
			idempotency_key TEXT,
			request_hash    TEXT NOT NULL,
			from_account    TEXT NOT NULL,
			to_iban         TEXT NOT NULL,
			amount          INTEGER NOT NULL CHECK (amount > 0),
			currency        TEXT NOT NULL,
			reference       TEXT NOT NULL,
			status          TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
			failure         TEXT NOT NULL DEFAULT '',
			response_status INTEGER NOT NULL DEFAULT 0,
			created_at      INTEGER NOT NULL,
			updated_at      INTEGER NOT NULL
		);
		CREATE UNIQUE INDEX payments_idempotency ON payments(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;`,
	},
	"ledger": {
		`CREATE TABLE entries (
			id          INTEGER PRIMARY KEY AUTOINCREMENT,
			txn_id      TEXT NOT NULL,
			account     TEXT NOT NULL,
			amount      INTEGER NOT NULL,
			currency    TEXT NOT NULL,
			description TEXT NOT NULL,
			created_at  INTEGER NOT NULL,
			UNIQUE (txn_id, account)
		);
		CREATE INDEX entries_account ON entries(account, id);
		CREATE TABLE transactions (
			id           TEXT PRIMARY KEY,
			owner        TEXT NOT NULL,
			request_hash TEXT NOT NULL,
			created_at   INTEGER NOT NULL
		);`,
	},
	"notifications": {
		`CREATE TABLE notifications (
			id         TEXT PRIMARY KEY,
			owner      TEXT NOT NULL,
			payment_id TEXT NOT NULL DEFAULT '',
			message    TEXT NOT NULL,
			created_at INTEGER NOT NULL
		);
		CREATE INDEX notifications_owner ON notifications(owner, created_at);`,
	},
}

// openDB opens the SQLite database at path (WAL, full sync, busy timeout,
// immediate write transactions), restricts its files to the owner and
// applies the pending migrations.
func openDB(ctx context.Context, path string, schema []string) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	db, err := sql.Open("sqlite", "file:"+escaped+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if err := migrate(ctx, db, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("restrict permissions of %s: %w", path+suffix, err)
		}
	}
	return db, nil
}

// migrate applies the schema versions newer than the database's.
func migrate(ctx context.Context, db *sql.DB, schema []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	var current int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(schema) {
		return fmt.Errorf("schema version %d is newer than this program's %d", current, len(schema))
	}
	for v := current + 1; v <= len(schema); v++ {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, schema[v-1]); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate to version %d: %w", v, err)
		}
	}
	return nil
}

// inTx runs fn in a transaction, committing when it returns nil.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// isUniqueViolation reports whether err is a unique-constraint violation.
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if errors.As(err, &e) {
		c := e.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
