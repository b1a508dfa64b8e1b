package ca

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
)

// CertRecord is one issued X.509-SVID in the inventory.
type CertRecord struct {
	Serial    string // lowercase hex
	SPIFFEID  string
	Agent     string // the agent it was issued through; empty for the control plane
	NotBefore time.Time
	NotAfter  time.Time
	IssuedAt  time.Time
	Authority string // the intermediate that signed it
}

// inventoryRetention is how long a certificate stays in the inventory
// after it expired.
const inventoryRetention = 24 * time.Hour

// maxCertificatesLimit bounds one inventory listing.
const maxCertificatesLimit = 1000

// recorder group-commits inventory rows: concurrent issuances share one
// transaction. The first caller that finds no flush in progress flushes;
// callers arriving meanwhile queue into the next batch, and when a flush
// ends with a batch waiting, one of that batch's callers takes over. No
// goroutine is started.
type recorder struct {
	mu       sync.Mutex
	cur      *recBatch
	flushing bool
}

type recBatch struct {
	recs []CertRecord
	done chan struct{} // closed when the batch is written (err set)
	lead chan struct{} // receives one token when a waiter must flush
	err  error
}

// maxRecordsPerInsert bounds the rows of one INSERT statement.
const maxRecordsPerInsert = 100

// record adds issued certificates to the inventory and returns once it
// is committed. The commit is asynchronous: the audit event appended right
// after it makes it durable.
func (a *Authority) record(ctx context.Context, recs []CertRecord) error {
	rc := &a.rec
	rc.mu.Lock()
	if rc.cur == nil {
		rc.cur = &recBatch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
	}
	b := rc.cur
	b.recs = append(b.recs, recs...)
	if !rc.flushing {
		rc.flushing = true
		rc.mu.Unlock()
		a.flushRecords(ctx)
	} else {
		rc.mu.Unlock()
		select {
		case <-b.done:
		case <-b.lead:
			a.flushRecords(ctx)
		}
	}
	<-b.done
	if b.err != nil {
		return fmt.Errorf("record certificate: %w", b.err)
	}
	return nil
}

// flushRecords writes the current batch; the caller holds the flush role,
// which it passes on to a waiter of the next batch, if any.
func (a *Authority) flushRecords(ctx context.Context) {
	rc := &a.rec
	rc.mu.Lock()
	b := rc.cur
	rc.cur = nil
	rc.mu.Unlock()
	b.err = a.insertRecords(context.WithoutCancel(ctx), b.recs)
	close(b.done)
	rc.mu.Lock()
	if rc.cur == nil {
		rc.flushing = false
	} else {
		rc.cur.lead <- struct{}{}
	}
	rc.mu.Unlock()
}

func (a *Authority) insertRecords(ctx context.Context, recs []CertRecord) error {
	return a.db.InTxAsyncCommit(ctx, func(tx *store.Tx) error {
		for len(recs) > 0 {
			n := min(len(recs), maxRecordsPerInsert)
			var q strings.Builder
			q.WriteString("INSERT INTO ca_certificates (serial, spiffe_id, agent, not_before, not_after, issued_at, authority) VALUES ")
			args := make([]any, 0, 7*n)
			for i, r := range recs[:n] {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
				args = append(args, r.Serial, r.SPIFFEID, r.Agent, r.NotBefore.UnixMilli(), r.NotAfter.UnixMilli(), r.IssuedAt.UnixMilli(), r.Authority)
			}
			if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
			recs = recs[n:]
		}
		return nil
	})
}

// Certificates lists issued certificates, newest first; limit is capped
// at 1000 (0 means 100).
func (a *Authority) Certificates(ctx context.Context, limit int) ([]CertRecord, error) {
	if limit < 0 {
		return nil, fmt.Errorf("certificates: %w: negative limit", ErrInvalid)
	}
	if limit == 0 {
		limit = 100
	}
	limit = min(limit, maxCertificatesLimit)
	rows, err := a.db.QueryContext(ctx, `SELECT serial, spiffe_id, agent, not_before, not_after, issued_at, authority
		FROM ca_certificates ORDER BY issued_at DESC, serial LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	defer rows.Close()
	var out []CertRecord
	for rows.Next() {
		var (
			r                 CertRecord
			nb, na, issuedAtM int64
		)
		if err := rows.Scan(&r.Serial, &r.SPIFFEID, &r.Agent, &nb, &na, &issuedAtM, &r.Authority); err != nil {
			return nil, fmt.Errorf("certificates: %w", err)
		}
		r.NotBefore, r.NotAfter, r.IssuedAt = time.UnixMilli(nb), time.UnixMilli(na), time.UnixMilli(issuedAtM)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	return out, nil
}

// refreshSoonest reads the soonest expiry of an unexpired SVID (for the
// gauge).
func (a *Authority) refreshSoonest(ctx context.Context) error {
	var soonest *int64
	if err := a.db.QueryRowContext(ctx, "SELECT MIN(not_after) FROM ca_certificates WHERE not_after > ?",
		a.now().UnixMilli()).Scan(&soonest); err != nil {
		return fmt.Errorf("soonest certificate expiry: %w", err)
	}
	if soonest == nil {
		a.soonestMs.Store(0)
	} else {
		a.soonestMs.Store(*soonest)
	}
	return nil
}

// noteExpiry lowers the soonest expiry to t if t is sooner, or if the
// recorded one has passed.
func (a *Authority) noteExpiry(t time.Time) {
	ms, nowMs := t.UnixMilli(), a.now().UnixMilli()
	for {
		cur := a.soonestMs.Load()
		if cur != 0 && cur > nowMs && cur <= ms {
			return
		}
		if a.soonestMs.CompareAndSwap(cur, ms) {
			return
		}
	}
}
