// Package store is Bulwark's persistence layer: database/sql over SQLite
// (modernc.org/sqlite, the embedded default) and PostgreSQL (pgx v5, for
// several stateless replicas), with embedded migrations and transaction
// helpers. Queries are written once with '?' placeholders and rebound for
// the backend in use.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Driver names a storage backend.
type Driver string

// The supported backends.
const (
	SQLite   Driver = "sqlite"
	Postgres Driver = "postgres"
)

// Options select and tune a backend. The zero value is not usable: Driver and
// either Path (SQLite) or DSN (PostgreSQL) must be set.
type Options struct {
	Driver       Driver
	Path         string // SQLite database file
	DSN          string // PostgreSQL connection string (URL or key=value)
	MaxOpenConns int    // 0 means 16
}

// DB is an open store. It is safe for concurrent use.
type DB struct {
	sql    *sql.DB
	driver Driver
	// txSem serializes SQLite transactions in this process. SQLite allows
	// one writer at a time (and every transaction here is a write
	// transaction, BEGIN IMMEDIATE); waiting on a mutex hands the lock over
	// at once, where SQLite's busy handler would sleep and poll.
	txSem chan struct{}
}

// lockTx takes the SQLite transaction lock, or fails when ctx ends first.
// On PostgreSQL it does nothing.
func (db *DB) lockTx(ctx context.Context) (unlock func(), err error) {
	if db.driver != SQLite {
		return func() {}, nil
	}
	timer := time.NewTimer(busyTimeout)
	defer timer.Stop()
	select {
	case db.txSem <- struct{}{}:
		return func() { <-db.txSem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("begin transaction: %w", ctx.Err())
	case <-timer.C:
		// As SQLite's own busy timeout would: a transaction that cannot
		// start (another one holds the lock this long, or a caller
		// begins a transaction inside its own) fails instead of hanging.
		return nil, fmt.Errorf("begin transaction: %w", errBusy)
	}
}

// busyTimeout is how long a transaction waits for SQLite's write lock; the
// DSN gives SQLite's busy handler the same bound.
const busyTimeout = 10 * time.Second

// errBusy is a transaction that waited busyTimeout for the write lock. It is
// transient: InTx retries it.
var errBusy = errors.New("database is busy: waited for the write lock too long")

// Open connects to the backend named by opts, checks the connection and
// applies every pending migration.
func Open(ctx context.Context, opts Options) (*DB, error) {
	maxConns := opts.MaxOpenConns
	if maxConns <= 0 {
		maxConns = 16
	}
	var (
		sdb *sql.DB
		err error
	)
	switch opts.Driver {
	case SQLite:
		if opts.Path == "" {
			return nil, errors.New("open sqlite store: no database path")
		}
		if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
			return nil, fmt.Errorf("open sqlite store: create directory: %w", err)
		}
		sdb, err = sql.Open("sqlite", sqliteDSN(opts.Path))
		if err != nil {
			return nil, fmt.Errorf("open sqlite store %q: %w", opts.Path, err)
		}
	case Postgres:
		if opts.DSN == "" {
			return nil, errors.New("open postgres store: no DSN")
		}
		sdb, err = sql.Open("pgx", opts.DSN)
		if err != nil {
			return nil, fmt.Errorf("open postgres store: %w", err)
		}
	default:
		return nil, fmt.Errorf("open store: unknown driver %q (want %q or %q)", opts.Driver, SQLite, Postgres)
	}
	sdb.SetMaxOpenConns(maxConns)
	sdb.SetMaxIdleConns(maxConns)
	sdb.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{sql: sdb, driver: opts.Driver, txSem: make(chan struct{}, 1)}
	if err := ping(ctx, sdb); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open %s store: connect: %w", opts.Driver, err)
	}
	if err := db.migrate(ctx); err != nil {
		sdb.Close()
		return nil, err
	}
	if opts.Driver == SQLite {
		// Secure the database file and its WAL companions: they hold the audit
		// log and credential hashes.
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Chmod(opts.Path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
				sdb.Close()
				return nil, fmt.Errorf("open sqlite store: restrict permissions: %w", err)
			}
		}
	}
	return db, nil
}

// ping opens the first connection. SQLite can answer SQLITE_BUSY at once,
// without waiting out the busy timeout, while another process is switching
// a new database to WAL (replicas starting together): that is retried for
// up to the busy timeout.
func ping(ctx context.Context, sdb *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	wait := 10 * time.Millisecond
	for {
		err := sdb.PingContext(ctx)
		if err == nil || !IsTransient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// sqliteDSN returns the modernc.org/sqlite DSN for a durable, concurrent
// database: WAL journal, fsync on every commit (synchronous=FULL, so an
// acknowledged write survives power loss), immediate write transactions (no
// lock upgrades that deadlock) and a busy timeout instead of SQLITE_BUSY.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return "file:" + uriPathEscaper.Replace(path) + "?" + q.Encode()
}

// uriPathEscaper escapes the characters that end or escape the path of an
// SQLite URI filename, so that a path holding '?', '#' or '%' names that
// file and not another one.
var uriPathEscaper = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// Driver reports the backend in use.
func (db *DB) Driver() Driver { return db.driver }

// SQL returns the underlying *sql.DB for callers that need it directly
// (benchmark loaders, health checks). Queries passed to it are not rebound.
func (db *DB) SQL() *sql.DB { return db.sql }

// Close closes every connection.
func (db *DB) Close() error { return db.sql.Close() }

// Ping checks that the backend answers.
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

// ExecContext runs a statement written with '?' placeholders.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.sql.ExecContext(ctx, db.Rebind(query), args...)
}

// QueryContext runs a query written with '?' placeholders.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.sql.QueryContext(ctx, db.Rebind(query), args...)
}

// QueryRowContext runs a query written with '?' placeholders that returns at most one row.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.sql.QueryRowContext(ctx, db.Rebind(query), args...)
}

// Rebind rewrites '?' placeholders to the backend's syntax ($1, $2, ... for
// PostgreSQL). Question marks inside quoted strings and identifiers are kept.
func (db *DB) Rebind(query string) string {
	if db.driver != Postgres {
		return query
	}
	return rebindDollar(query)
}

func rebindDollar(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Tx is a transaction whose statements are written with '?' placeholders.
type Tx struct {
	tx *sql.Tx
	db *DB
}

// ExecContext runs a statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.tx.ExecContext(ctx, tx.db.Rebind(query), args...)
}

// QueryContext runs a query in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.tx.QueryContext(ctx, tx.db.Rebind(query), args...)
}

// QueryRowContext runs a query in the transaction that returns at most one row.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return tx.tx.QueryRowContext(ctx, tx.db.Rebind(query), args...)
}

// PrepareContext prepares a statement for repeated use in the transaction.
func (tx *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return tx.tx.PrepareContext(ctx, tx.db.Rebind(query))
}

// Stmt is a statement prepared once on each connection that runs it and
// reused by every transaction after that, which saves the backend from
// parsing and planning it each time. It is safe for concurrent use.
type Stmt struct {
	s *sql.Stmt
}

// PrepareContext prepares a statement written with '?' placeholders for use
// in any transaction (see Tx.Stmt). Close it when it is no longer needed.
func (db *DB) PrepareContext(ctx context.Context, query string) (*Stmt, error) {
	s, err := db.sql.PrepareContext(ctx, db.Rebind(query))
	if err != nil {
		return nil, err
	}
	return &Stmt{s: s}, nil
}

// Close releases the statement on every connection.
func (s *Stmt) Close() error { return s.s.Close() }

// Stmt returns s bound to the transaction; it is valid until the
// transaction ends.
func (tx *Tx) Stmt(ctx context.Context, s *Stmt) *sql.Stmt {
	return tx.tx.StmtContext(ctx, s.s)
}

// Driver reports the backend of the transaction.
func (tx *Tx) Driver() Driver { return tx.db.driver }

// maxTxAttempts bounds the retries of a transaction that lost a
// serialization race or found the database busy.
const maxTxAttempts = 5

// InTx runs fn in a transaction and commits it if fn returns nil; otherwise
// it rolls back and returns fn's error. A transaction that fails with a
// transient conflict (PostgreSQL serialization failure or deadlock, SQLite
// busy) is retried from the start, so fn must not have effects outside the
// transaction that cannot be repeated.
func (db *DB) InTx(ctx context.Context, fn func(tx *Tx) error) error {
	return retryTransient(ctx, func() error { return db.inTxOnce(ctx, fn) })
}

// retryTransient runs once until it succeeds, fails for a reason other
// than a transient conflict, ctx ends, or maxTxAttempts are spent.
func retryTransient(ctx context.Context, once func() error) error {
	var err error
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		err = once()
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
		}
	}
	return fmt.Errorf("transaction failed after %d attempts: %w", maxTxAttempts, err)
}

func (db *DB) inTxOnce(ctx context.Context, fn func(tx *Tx) error) (err error) {
	unlock, err := db.lockTx(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	stx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	return db.runTx(stx, fn)
}

// InTxAsyncCommit is InTx for writes that may be lost in a crash as long
// as nothing that depends on them survives it: the commit returns before
// the write is flushed to disk (SQLite synchronous=NORMAL for this
// transaction; PostgreSQL synchronous_commit=off). Both backends keep
// commits in log order, so the write becomes durable no later than the
// next synchronous commit on the same database — for example the audit
// event that a caller appends before it acts on the write. A crash can
// lose only the newest asynchronous commits, never reorder or corrupt them.
func (db *DB) InTxAsyncCommit(ctx context.Context, fn func(tx *Tx) error) error {
	if db.driver == Postgres {
		return db.InTx(ctx, func(tx *Tx) error {
			if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
				return fmt.Errorf("asynchronous commit: %w", err)
			}
			return fn(tx)
		})
	}
	return retryTransient(ctx, func() error { return db.sqliteAsyncOnce(ctx, fn) })
}

// sqliteAsyncOnce runs fn in one transaction on a connection switched to
// synchronous=NORMAL, and switches it back (or discards it) before it
// returns to the pool.
func (db *DB) sqliteAsyncOnce(ctx context.Context, fn func(tx *Tx) error) (err error) {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return fmt.Errorf("asynchronous commit: %w", err)
	}
	defer func() {
		// Restore under a fresh context: the caller's may be done.
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, rerr := conn.ExecContext(rctx, "PRAGMA synchronous = FULL"); rerr != nil {
			// Never return a relaxed connection to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}()
	unlock, err := db.lockTx(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return fmt.Errorf("asynchronous commit: %w", err)
	}
	stx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	return db.runTx(stx, fn)
}

// runTx runs fn in the begun transaction stx, then commits, or rolls back
// if fn fails or panics.
func (db *DB) runTx(stx *sql.Tx, fn func(tx *Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			_ = stx.Rollback()
			panic(p)
		}
	}()
	if err := fn(&Tx{tx: stx, db: db}); err != nil {
		if rbErr := stx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
		}
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// IsTransient reports whether err is a conflict that a retry of the whole
// transaction can resolve.
func IsTransient(err error) bool {
	if errors.Is(err, errBusy) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		code := sqErr.Code() & 0xff
		return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
	}
	return false
}

// IsUniqueViolation reports whether err is a unique or primary-key constraint violation.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		c := sqErr.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
