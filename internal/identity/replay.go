package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
)

// errReplay is returned (wrapped) by useOnce for an identifier that was
// already used.
var errReplay = errors.New("identifier already used")

// Bounds of the replay store's group commit.
const (
	// maxReplayBatch bounds the identifiers written in one transaction.
	maxReplayBatch = 256
	// replayCommitTimeout bounds one batch's transaction. A batch carries
	// several callers' identifiers, so it does not run under any one
	// caller's context.
	replayCommitTimeout = 10 * time.Second
	// maxReplayJTILen is the longest identifier stored as is; longer ones
	// are stored as their SHA-256, which keeps the primary key small.
	maxReplayJTILen = 200
)

// useOnce records that jti was used in namespace (for example "dpop" or
// "client_assertion") and must not be accepted again until until. It
// returns an error wrapping errReplay when the identifier was already
// recorded.
//
// The record is committed asynchronously (store.InTxAsyncCommit): it is
// visible to every other caller at once, and becomes durable with the next
// synchronous commit on the database. Every caller acts on a fresh
// identifier only through such a commit — the token endpoint's audit event
// of the issued token, PAR's stored request, a revocation's feed entry —
// so a crash cannot lose an identifier whose use changed anything. (A
// successful introspection writes nothing: after a crash, its assertion
// could at most repeat that read within the assertion's few minutes.)
// This takes an fsync off the token endpoint's hot path.
//
// It is on the token endpoint's hot path, so concurrent calls are group-
// committed: callers queue their identifiers, and the first caller to
// find no commit in progress becomes the leader, which writes everything
// queued (up to maxReplayBatch) in one transaction, answers each caller,
// and hands leadership to the first caller still queued. There is no
// background goroutine to start or stop.
func (s *Server) useOnce(ctx context.Context, namespace, jti string, until time.Time) error {
	if namespace == "" || jti == "" {
		return errors.New("replay check: empty namespace or identifier")
	}
	if len(jti) > maxReplayJTILen {
		jti = "sha256:" + hashSecret(jti)
	}
	b := &s.mgmtState().replay
	r := &replayReq{namespace: namespace, jti: jti, until: until.UnixMilli(), wake: make(chan struct{}, 1)}

	b.mu.Lock()
	b.queue = append(b.queue, r)
	lead := !b.leading
	b.leading = true
	b.mu.Unlock()

	for {
		if lead {
			b.lead(ctx, s.db)
			lead = false
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
		}
		b.mu.Lock()
		switch {
		case r.decided:
			b.mu.Unlock()
			return r.err
		case r.lead:
			// Leadership was handed over: commit even if ctx has ended, or
			// the callers queued behind would wait forever.
			r.lead, lead = false, true
			b.mu.Unlock()
		case ctx.Err() != nil:
			// Give up. A request still queued is withdrawn; one in a batch
			// being committed is decided without anyone waiting.
			if i := slices.Index(b.queue, r); i >= 0 {
				b.queue = slices.Delete(b.queue, i, i+1)
			}
			b.mu.Unlock()
			return fmt.Errorf("replay check: %w", ctx.Err())
		default:
			b.mu.Unlock() // a stale wake-up
		}
	}
}

// replayBatcher queues useOnce calls for group commit.
// Invariant: when leading is false the queue is empty, and a leader's own
// request is at the front of the queue, so its first batch decides it.
type replayBatcher struct {
	mu      sync.Mutex
	queue   []*replayReq
	leading bool // a caller is committing or has been handed leadership
}

// replayReq is one queued useOnce call. Fields below wake are guarded by
// the batcher's mutex.
type replayReq struct {
	namespace, jti string
	until          int64
	// wake is signalled when the request is decided or its caller must
	// lead.
	wake    chan struct{}
	decided bool
	err     error
	lead    bool
}

func (r *replayReq) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// lead commits one batch from the front of the queue, answers its callers,
// and passes leadership to the next queued caller or gives it up.
func (b *replayBatcher) lead(ctx context.Context, db *store.DB) {
	b.mu.Lock()
	n := min(len(b.queue), maxReplayBatch)
	batch := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replayCommitTimeout)
	fresh, err := commitReplayBatch(ctx, db, batch)
	cancel()

	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range batch {
		switch {
		case err != nil:
			r.err = fmt.Errorf("replay check: %w", err)
		case !fresh[i]:
			r.err = fmt.Errorf("replay check: %w", errReplay)
		}
		r.decided = true
		r.signal()
	}
	if len(b.queue) == 0 {
		b.leading = false
		return
	}
	next := b.queue[0]
	next.lead = true
	next.signal()
}

// commitReplayBatch inserts the batch's identifiers in one transaction and
// reports, for each request, whether its identifier was new. A duplicate
// within the batch counts as a replay of the first occurrence.
func commitReplayBatch(ctx context.Context, db *store.DB, batch []*replayReq) ([]bool, error) {
	type key struct{ ns, jti string }
	first := make(map[key]int, len(batch)) // key → index of its first request
	var rows []int                         // indexes of the requests to insert
	for i, r := range batch {
		k := key{r.namespace, r.jti}
		if _, dup := first[k]; !dup {
			first[k] = i
			rows = append(rows, i)
		}
	}
	// A consistent row order keeps two replicas' batches from deadlocking
	// on PostgreSQL's speculative-insertion locks.
	slices.SortFunc(rows, func(a, b int) int {
		if c := strings.Compare(batch[a].namespace, batch[b].namespace); c != 0 {
			return c
		}
		return strings.Compare(batch[a].jti, batch[b].jti)
	})
	var q strings.Builder
	q.WriteString("INSERT INTO identity_replay (namespace, jti, expires_at) VALUES ")
	args := make([]any, 0, 3*len(rows))
	for n, i := range rows {
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?)")
		args = append(args, batch[i].namespace, batch[i].jti, batch[i].until)
	}
	q.WriteString(" ON CONFLICT (namespace, jti) DO NOTHING RETURNING namespace, jti")
	query := q.String()

	var inserted map[key]bool
	err := db.InTxAsyncCommit(ctx, func(tx *store.Tx) error {
		inserted = make(map[key]bool, len(rows)) // the function may run again
		res, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer res.Close()
		for res.Next() {
			var k key
			if err := res.Scan(&k.ns, &k.jti); err != nil {
				return err
			}
			inserted[k] = true
		}
		return res.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("record %d identifiers: %w", len(rows), err)
	}
	fresh := make([]bool, len(batch))
	for i, r := range batch {
		k := key{r.namespace, r.jti}
		fresh[i] = first[k] == i && inserted[k]
	}
	return fresh, nil
}

// mgmtState is the per-Server state of the replay store and the
// revocation feed. Its zero value is ready to use.
type mgmtState struct {
	replay replayBatcher
	feed   feedNotifier
}

// mgmtState returns the server's replay and feed state.
func (s *Server) mgmtState() *mgmtState { return &s.mgmt }
