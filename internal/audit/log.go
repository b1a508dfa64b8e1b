package audit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/store"
)

// MaxEntryBytes is the largest log entry: C2SP tlog-tiles entry bundles
// prefix each entry with a 16-bit length. A larger event is stored beside
// the log and the entry holds its hash (see PayloadRef).
const MaxEntryBytes = 1<<16 - 1

// Errors a caller can test for.
var (
	ErrClosed     = errors.New("audit log is shut down")
	ErrCorrupt    = errors.New("audit log storage is corrupt")
	ErrFork       = errors.New("audit log fork: two checkpoints of the same size with different roots")
	ErrOutOfRange = errors.New("out of range")
	ErrNotFound   = errors.New("not found")
	ErrEmptyBatch = errors.New("empty batch")
)

// Config tunes a Log. Zero values take the defaults noted.
type Config struct {
	Origin             string        // checkpoint origin; required
	CheckpointInterval time.Duration // default 10s
	CommitBatch        int           // max entries per group commit; default 4096
	MaxEventBytes      int           // largest canonical event accepted; default 1 MiB
}

// Deps are a Log's collaborators.
type Deps struct {
	DB *store.DB
	// SignerKey and VerifierKey are the checkpoint key pair in signed-note
	// form (see GenerateSigningKey); the key name must be the origin.
	SignerKey   string
	VerifierKey string
	Logger      *slog.Logger
	// Metrics receives the log's Prometheus metrics; nil registers nothing.
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Log is the append-only Merkle log. Appends from any number of goroutines
// are grouped into one transaction each (group commit) by a single
// sequencer; an append returns only after its transaction is durable.
type Log struct {
	cfg      Config
	db       *store.DB
	signer   note.Signer
	verifier note.Verifier
	log      *slog.Logger
	metrics  *Metrics
	now      func() time.Time
	cache    *hashCache
	stmts    *stmtCache // the commit path's statements; the sequencer's alone

	reqs    chan *appendReq
	running atomic.Bool
	ready   atomic.Bool
	closing chan struct{}

	ckptMu      sync.Mutex // one checkpoint issuance at a time in this process
	verifierKey string
}

// Entry is one log entry as stored.
type Entry struct {
	Index int64
	Data  []byte
}

// Checkpoint is a signed tree head.
type Checkpoint struct {
	Size int64
	Root tlog.Hash
	Note []byte // the C2SP signed note, as served
}

type prepared struct {
	data []byte    // the entry
	leaf tlog.Hash // tlog.RecordHash(data), computed by the caller, off the sequencer
	blob []byte    // the full canonical event, when data is only a reference
}

type appendReq struct {
	entries []prepared
	resp    chan appendResp
	start   time.Time
}

type appendResp struct {
	first int64
	err   error
}

// New validates cfg and returns a Log. Call Run to start its sequencer.
func New(cfg Config, deps Deps) (*Log, error) {
	if deps.DB == nil {
		return nil, errors.New("audit log: no store")
	}
	if cfg.Origin == "" {
		return nil, errors.New("audit log: empty origin")
	}
	signer, verifier, err := loadKeyPair(deps.SignerKey, deps.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if signer.Name() != cfg.Origin {
		return nil, fmt.Errorf("audit log: checkpoint key is named %q, but the origin is %q", signer.Name(), cfg.Origin)
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 10 * time.Second
	}
	if cfg.CommitBatch <= 0 {
		cfg.CommitBatch = 4096
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = 1 << 20
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Log{
		cfg: cfg, db: deps.DB, signer: signer, verifier: verifier, log: deps.Logger, metrics: deps.Metrics, now: deps.Now,
		cache:       newHashCache(),
		stmts:       &stmtCache{db: deps.DB, m: make(map[stmtKey]*store.Stmt)},
		verifierKey: deps.VerifierKey,
		reqs:        make(chan *appendReq, 4096),
		closing:     make(chan struct{}),
	}, nil
}

// Origin returns the log's checkpoint origin.
func (l *Log) Origin() string { return l.cfg.Origin }

// Run sequences appends and issues checkpoints until ctx ends. Appends
// already taken into a batch are committed; waiting ones get ErrClosed.
func (l *Log) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("audit log: already running")
	}
	size, err := l.readSize(ctx, l.db)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	l.metrics.startedAt(size)
	if _, err := l.IssueCheckpoint(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("audit log: first checkpoint: %w", err)
	}
	l.ready.Store(true)
	defer l.ready.Store(false)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.checkpointLoop(ctx)
	}()
	l.sequence(ctx)
	l.stmts.close()
	close(l.closing)
	wg.Wait()
	// Refuse whatever is still queued.
	for {
		select {
		case r := <-l.reqs:
			r.resp <- appendResp{err: ErrClosed}
		default:
			return nil
		}
	}
}

// Ready reports whether the log is sequencing appends and has a checkpoint.
func (l *Log) Ready() bool { return l.ready.Load() }

// AppendResult says where a batch was logged.
type AppendResult struct {
	First      int64       // index of the first event; the others follow in order
	LeafHashes []tlog.Hash // RFC 6962 leaf hash of each event's entry
}

// Append validates, normalises (in place) and appends events as one atomic
// batch: all are logged, in order, or none is. It returns only once the
// batch is durable.
func (l *Log) Append(ctx context.Context, events []*Event) (AppendResult, error) {
	if len(events) == 0 {
		return AppendResult{}, ErrEmptyBatch
	}
	now := l.now()
	entries := make([]prepared, len(events))
	for i, e := range events {
		if err := e.Normalize(now); err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) {
				ve.Index = i
			}
			return AppendResult{}, err
		}
		p, err := l.prepare(e)
		if err != nil {
			var ve *ValidationError
			if errors.As(err, &ve) {
				ve.Index = i
			}
			return AppendResult{}, err
		}
		entries[i] = p
	}
	first, err := l.appendPrepared(ctx, entries)
	if err != nil {
		return AppendResult{}, err
	}
	res := AppendResult{First: first, LeafHashes: make([]tlog.Hash, len(entries))}
	for i, p := range entries {
		res.LeafHashes[i] = p.leaf
	}
	return res, nil
}

// AppendEntries appends raw entries as one atomic batch. It is for
// replication and benchmarks: entries are logged as given, unvalidated.
func (l *Log) AppendEntries(ctx context.Context, data [][]byte) (int64, error) {
	if len(data) == 0 {
		return 0, ErrEmptyBatch
	}
	entries := make([]prepared, len(data))
	for i, d := range data {
		if len(d) > MaxEntryBytes {
			return 0, fmt.Errorf("entry %d: %d bytes exceeds the %d-byte entry limit", i, len(d), MaxEntryBytes)
		}
		entries[i] = prepared{data: d, leaf: tlog.RecordHash(d)}
	}
	return l.appendPrepared(ctx, entries)
}

func (l *Log) prepare(e *Event) (prepared, error) {
	canon, err := e.Canonical()
	if err != nil {
		return prepared{}, err
	}
	if len(canon) > l.cfg.MaxEventBytes {
		return prepared{}, &ValidationError{Code: CodeEventTooLarge,
			Msg: fmt.Sprintf("event is %d bytes in canonical form, the limit is %d", len(canon), l.cfg.MaxEventBytes)}
	}
	if len(canon) <= MaxEntryBytes {
		return prepared{data: canon, leaf: tlog.RecordHash(canon)}, nil
	}
	sum := sha256.Sum256(canon)
	ref := Event{
		ClassUID: e.ClassUID, ClassName: e.ClassName, ActivityID: e.ActivityID, ActivityName: e.ActivityName,
		Time: e.Time, SeverityID: e.SeverityID, StatusID: e.StatusID, Status: e.Status,
		Metadata:   e.Metadata,
		PayloadRef: &PayloadRef{SHA256: hex.EncodeToString(sum[:]), Size: len(canon)},
	}
	data, err := ref.Canonical()
	if err != nil {
		return prepared{}, err
	}
	if len(data) > MaxEntryBytes {
		return prepared{}, &ValidationError{Code: CodeEventTooLarge, Msg: "event metadata alone exceeds one log entry"}
	}
	return prepared{data: data, leaf: tlog.RecordHash(data), blob: canon}, nil
}

func (l *Log) appendPrepared(ctx context.Context, entries []prepared) (int64, error) {
	req := &appendReq{entries: entries, resp: make(chan appendResp, 1), start: time.Now()}
	select {
	case <-l.closing:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	case l.reqs <- req:
	}
	select {
	case r := <-req.resp:
		return r.first, r.err
	case <-ctx.Done():
		// The batch may still commit; the caller was not told it did.
		return 0, ctx.Err()
	}
}

// sequence is the single writer: it takes queued appends into batches of up
// to CommitBatch entries and commits each batch in one transaction.
func (l *Log) sequence(ctx context.Context) {
	for {
		var first *appendReq
		select {
		case <-ctx.Done():
			return
		case first = <-l.reqs:
		}
		batch, n := l.takeWaiting([]*appendReq{first}, len(first.entries))
		l.commit(batch, n)
	}
}

// takeWaiting adds the appends waiting in the queue to batch, which holds
// n entries, while it holds fewer than CommitBatch.
func (l *Log) takeWaiting(batch []*appendReq, n int) ([]*appendReq, int) {
	for n < l.cfg.CommitBatch {
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
			n += len(r.entries)
		default:
			return batch, n
		}
	}
	return batch, n
}

func (l *Log) commit(batch []*appendReq, n int) {
	// The commit must finish even while shutting down: a batch the
	// sequencer took is either durable or reported as failed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	var (
		first   int64
		records [][]tlog.Hash
	)
	err := l.db.InTx(ctx, func(tx *store.Tx) error {
		size, err := l.readSizeForUpdate(ctx, tx)
		if err != nil {
			return err
		}
		// Appends that arrived while the transaction began join it: the
		// bigger the group, the fewer commits (and fsyncs) per append.
		batch, n = l.takeWaiting(batch, n)
		first = size
		records = records[:0]
		pending := make(map[int64]tlog.Hash, n*2)
		reader := &storeHashReader{ctx: ctx, q: tx, cache: l.cache, pending: pending}
		entryArgs := make([]any, 0, 2*n)
		hashArgs := make([]any, 0, 2*n)
		var blobArgs []any
		idx := size
		for _, r := range batch {
			for _, p := range r.entries {
				hs, err := tlog.StoredHashesForRecordHash(idx, p.leaf, reader)
				if err != nil {
					return fmt.Errorf("hash entry %d: %w", idx, err)
				}
				base := tlog.StoredHashIndex(0, idx)
				for j, h := range hs {
					pending[base+int64(j)] = h
				}
				records = append(records, hs)
				entryArgs = append(entryArgs, idx, p.data)
				hashArgs = append(hashArgs, idx, packHashes(hs))
				if p.blob != nil {
					sum := sha256.Sum256(p.blob)
					blobArgs = append(blobArgs, sum[:], p.blob)
				}
				idx++
			}
		}
		if err := l.insertRows(ctx, tx, insertEntries, entryArgs); err != nil {
			return fmt.Errorf("insert entries: %w", err)
		}
		if err := l.insertRows(ctx, tx, insertHashes, hashArgs); err != nil {
			return fmt.Errorf("insert hashes: %w", err)
		}
		if err := l.insertRows(ctx, tx, insertBlobs, blobArgs); err != nil {
			return fmt.Errorf("insert payloads: %w", err)
		}
		upd, err := l.stmts.get(ctx, stmtKey{text: "UPDATE audit_head SET size = ? WHERE id = 1 AND size = ?"})
		if err != nil {
			return fmt.Errorf("advance tree size: %w", err)
		}
		res, err := tx.Stmt(ctx, upd).ExecContext(ctx, idx, size)
		if err != nil {
			return fmt.Errorf("advance tree size: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil || k != 1 {
			return fmt.Errorf("advance tree size from %d: concurrent writer (%d rows, %v)", size, k, err)
		}
		return nil
	})
	if err != nil {
		l.log.Error("audit append failed", "entries", n, "error", err)
		l.metrics.appendFailed(len(batch))
		for _, r := range batch {
			r.resp <- appendResp{err: fmt.Errorf("append to audit log: %w", err)}
		}
		return
	}
	for i, hs := range records {
		l.cache.addRecord(first+int64(i), hs)
	}
	newSize := first + int64(n)
	l.metrics.committed(n, len(batch), time.Since(start), newSize)
	next := first
	for _, r := range batch {
		r.resp <- appendResp{first: next}
		l.metrics.acked(time.Since(r.start))
		next += int64(len(r.entries))
	}
}

// The multi-row INSERTs of a commit, as stmtKey texts: the VALUES list
// goes in place of the %s.
const (
	insertEntries = "INSERT INTO audit_entries (idx, data) VALUES %s"
	insertHashes  = "INSERT INTO audit_hashes (record, hashes) VALUES %s"
	insertBlobs   = "INSERT INTO audit_blobs (sha256, data) VALUES %s ON CONFLICT (sha256) DO NOTHING"
)

// maxRowsPerInsert is the most rows one INSERT carries: 512 parameters,
// well under SQLite's and PostgreSQL's limits.
const maxRowsPerInsert = 256

// insertRows inserts rows of two columns (args holds them in order) with
// multi-row INSERTs of power-of-two sizes, so that a handful of prepared
// statements serve every batch size.
func (l *Log) insertRows(ctx context.Context, tx *store.Tx, insert string, args []any) error {
	rows := len(args) / 2
	for done := 0; done < rows; {
		k := maxRowsPerInsert
		for k > rows-done {
			k >>= 1
		}
		st, err := l.stmts.get(ctx, stmtKey{text: insert, rows: k})
		if err != nil {
			return err
		}
		if _, err := tx.Stmt(ctx, st).ExecContext(ctx, args[2*done:2*(done+k)]...); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// stmtKey names a statement of the commit path: text as is, or, when rows
// is set, a multi-row INSERT template completed with rows "(?,?)" tuples.
type stmtKey struct {
	text string
	rows int
}

func (k stmtKey) query() string {
	if k.rows == 0 {
		return k.text
	}
	return fmt.Sprintf(k.text, "(?,?)"+strings.Repeat(",(?,?)", k.rows-1))
}

// stmtCache holds the prepared statements of the commit path, prepared on
// first use. Only the sequencer uses it, so it has no lock.
type stmtCache struct {
	db *store.DB
	m  map[stmtKey]*store.Stmt
}

func (c *stmtCache) get(ctx context.Context, k stmtKey) (*store.Stmt, error) {
	if s, ok := c.m[k]; ok {
		return s, nil
	}
	s, err := c.db.PrepareContext(ctx, k.query())
	if err != nil {
		return nil, fmt.Errorf("prepare statement: %w", err)
	}
	c.m[k] = s
	return s, nil
}

func (c *stmtCache) close() {
	for k, s := range c.m {
		s.Close()
		delete(c.m, k)
	}
}

func (l *Log) readSize(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int64, error) {
	var size int64
	if err := q.QueryRowContext(ctx, "SELECT size FROM audit_head WHERE id = 1").Scan(&size); err != nil {
		return 0, fmt.Errorf("read audit tree size: %w", err)
	}
	return size, nil
}

// readSizeForUpdate reads the tree size and, on PostgreSQL, locks the head
// row so that replicas sharing the database append one after another.
// (SQLite write transactions are already exclusive.)
func (l *Log) readSizeForUpdate(ctx context.Context, tx *store.Tx) (int64, error) {
	q := "SELECT size FROM audit_head WHERE id = 1"
	if tx.Driver() == store.Postgres {
		q += " FOR UPDATE"
	}
	st, err := l.stmts.get(ctx, stmtKey{text: q})
	if err != nil {
		return 0, fmt.Errorf("read audit tree size: %w", err)
	}
	var size int64
	if err := tx.Stmt(ctx, st).QueryRowContext(ctx).Scan(&size); err != nil {
		return 0, fmt.Errorf("read audit tree size: %w", err)
	}
	return size, nil
}

// Size returns the committed number of entries.
func (l *Log) Size(ctx context.Context) (int64, error) {
	size, err := l.readSize(ctx, l.db)
	if err != nil {
		return 0, err
	}
	return size, nil
}

func (l *Log) reader(ctx context.Context) *storeHashReader {
	return &storeHashReader{ctx: ctx, q: l.db, cache: l.cache}
}

// TreeHash returns the RFC 6962 root of the first size entries.
func (l *Log) TreeHash(ctx context.Context, size int64) (tlog.Hash, error) {
	return treeHash(size, l.reader(ctx))
}

func treeHash(size int64, r tlog.HashReader) (tlog.Hash, error) {
	if size == 0 {
		return tlog.Hash(sha256.Sum256(nil)), nil // RFC 6962: the hash of the empty string
	}
	return tlog.TreeHash(size, r)
}

// Entries returns up to limit entries from index start, in order. Entries
// missing from storage are skipped, so a gap in the indexes is visible.
func (l *Log) Entries(ctx context.Context, start int64, limit int) ([]Entry, error) {
	rows, err := l.db.QueryContext(ctx,
		"SELECT idx, data FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx", start, start+int64(limit))
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.Index, &e.Data); err != nil {
			return nil, fmt.Errorf("read entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	return out, nil
}

// Blob returns a payload stored beside the log by the hex of its SHA-256.
func (l *Log) Blob(ctx context.Context, sha256Hex string) ([]byte, error) {
	sum, err := hex.DecodeString(sha256Hex)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("payload hash %q: %w", sha256Hex, ErrNotFound)
	}
	var data []byte
	err = l.db.QueryRowContext(ctx, "SELECT data FROM audit_blobs WHERE sha256 = ?", sum).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("payload %s: %w", sha256Hex, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	return data, nil
}

// InclusionProof proves that entry index is in the tree of size treeSize.
func (l *Log) InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error) {
	if err := l.checkRange(ctx, treeSize); err != nil {
		return nil, err
	}
	if index < 0 || index >= treeSize {
		return nil, fmt.Errorf("index %d not in a tree of size %d: %w", index, treeSize, ErrOutOfRange)
	}
	p, err := tlog.ProveRecord(treeSize, index, l.reader(ctx))
	if err != nil {
		return nil, fmt.Errorf("prove entry %d in tree %d: %w", index, treeSize, err)
	}
	return p, nil
}

// ConsistencyProof proves that the tree of size from is a prefix of the
// tree of size to.
func (l *Log) ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	if err := l.checkRange(ctx, to); err != nil {
		return nil, err
	}
	if from < 1 || from > to {
		return nil, fmt.Errorf("consistency from %d to %d: need 1 <= from <= to: %w", from, to, ErrOutOfRange)
	}
	p, err := tlog.ProveTree(to, from, l.reader(ctx))
	if err != nil {
		return nil, fmt.Errorf("prove tree %d consistent with %d: %w", from, to, err)
	}
	return p, nil
}

func (l *Log) checkRange(ctx context.Context, treeSize int64) error {
	size, err := l.Size(ctx)
	if err != nil {
		return err
	}
	if treeSize < 1 || treeSize > size {
		return fmt.Errorf("tree size %d: the log has %d entries: %w", treeSize, size, ErrOutOfRange)
	}
	return nil
}
