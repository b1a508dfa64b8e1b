package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Revocation feed limits.
const (
	// maxFeedPage bounds the entries in one feed response.
	maxFeedPage = 1000
	// maxFeedWait bounds a long-poll, in seconds.
	maxFeedWait = 30
	// feedPollInterval is how often a long-poll looks for revocations made
	// by other replicas; revocations made by this process wake it at once.
	feedPollInterval = 500 * time.Millisecond
)

// Revocation reasons recorded in identity_revocations.reason and audit
// events.
const (
	reasonClientRequest = "client_request" // RFC 7009 revocation request
)

// feedNotifier wakes the revocation feed's long-polls in this process when
// a revocation commits.
type feedNotifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// changed returns a channel that is closed at the next notify. Take it
// before reading the feed so that no revocation slips between the read and
// the wait.
func (f *feedNotifier) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ch == nil {
		f.ch = make(chan struct{})
	}
	return f.ch
}

// notify wakes every waiter.
func (f *feedNotifier) notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ch != nil {
		close(f.ch)
		f.ch = nil
	}
}

// lockRevocationFeed serializes the transactions that append to the
// revocation feed. Feed readers page by seq ("everything after the last seq
// I saw"), which is only safe if entries become visible in seq order. On
// PostgreSQL an identity value is taken at insert time, not at commit, so
// two concurrent transactions could commit seq 12 after a reader has
// already seen seq 13 and moved past 12 for good. Holding SHARE ROW
// EXCLUSIVE (which conflicts with itself and with plain inserts, but not
// with readers) from before the insert until commit makes seq order equal
// commit order. SQLite has a single writer, so it is already serial.
func lockRevocationFeed(ctx context.Context, tx *store.Tx) error {
	if tx.Driver() != store.Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE identity_revocations IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("lock revocation feed: %w", err)
	}
	return nil
}

// revokeAccessToken puts the access token jti, valid until exp, in the
// revocation feed. Revoking a token twice, or one that has expired, does
// nothing. The caller audits.
func (s *Server) revokeAccessToken(ctx context.Context, jti string, exp time.Time, reason string) error {
	if jti == "" {
		return errors.New("revoke access token: empty jti")
	}
	now := s.now()
	if !exp.After(now) {
		return nil // verifiers refuse it anyway
	}
	var added int64
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := lockRevocationFeed(ctx, tx); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO identity_revocations (jti, expires_at, revoked_at, reason)
			VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING`, jti, exp.UnixMilli(), now.UnixMilli(), reason)
		if err != nil {
			return err
		}
		added, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke access token: %w", err)
	}
	if added > 0 {
		s.mgmtState().feed.notify()
	}
	return nil
}

// revokeGrant revokes a grant and everything issued under it: its refresh
// tokens, and every unexpired access token recorded for it (into the
// revocation feed), in one transaction. It is idempotent and audited.
func (s *Server) revokeGrant(ctx context.Context, grantID, reason string) error {
	return s.revokeGrantBy(ctx, nil, nil, grantID, reason)
}

// grantRevocation is what revoking a grant changed.
type grantRevocation struct {
	found                 bool
	clientID, subject     string
	refreshRevoked, added int64
}

// revokeGrantBy is revokeGrant on behalf of a request and actor (nil for
// the server itself), for the audit event.
func (s *Server) revokeGrantBy(ctx context.Context, r *http.Request, actor *audit.Actor, grantID, reason string) error {
	if grantID == "" {
		return errors.New("revoke grant: empty grant ID")
	}
	var res grantRevocation
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		res = grantRevocation{}
		now := s.now().UnixMilli()
		if err := lockRevocationFeed(ctx, tx); err != nil {
			return err
		}
		// Mark the grant first: on PostgreSQL this waits for a token
		// endpoint transaction holding the grant row, so the access tokens
		// it records are visible to the copy below.
		if _, err := tx.ExecContext(ctx, "UPDATE identity_grants SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL", now, grantID); err != nil {
			return fmt.Errorf("mark grant: %w", err)
		}
		err := tx.QueryRowContext(ctx, "SELECT client_id, subject FROM identity_grants WHERE grant_id = ?", grantID).Scan(&res.clientID, &res.subject)
		switch {
		case err == nil:
			res.found = true
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read grant: %w", err)
		}
		out, err := tx.ExecContext(ctx, "UPDATE identity_refresh_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL", now, grantID)
		if err != nil {
			return fmt.Errorf("revoke refresh tokens: %w", err)
		}
		if res.refreshRevoked, err = out.RowsAffected(); err != nil {
			return err
		}
		out, err = tx.ExecContext(ctx, `INSERT INTO identity_revocations (jti, expires_at, revoked_at, reason)
			SELECT jti, expires_at, ?, ? FROM identity_access_tokens WHERE grant_id = ? AND expires_at > ?
			ON CONFLICT (jti) DO NOTHING`, now, reason, grantID, now)
		if err != nil {
			return fmt.Errorf("revoke access tokens: %w", err)
		}
		res.added, err = out.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke grant %s: %w", grantID, err)
	}
	if res.added > 0 {
		s.mgmtState().feed.notify()
	}
	ev := newEvent(classAPIActivity, actDelete, true, "grant revoked")
	ev.Actor = actor
	ev.Message = "OAuth grant revoked with its refresh and access tokens"
	ev.Resources = []audit.Resource{{Type: "oauth_grant", UID: grantID}}
	ev.Unmapped = map[string]any{
		"reason":                 reason,
		"grant_found":            res.found,
		"grant_client_id":        res.clientID,
		"grant_subject":          res.subject,
		"refresh_tokens_revoked": res.refreshRevoked,
		"access_tokens_revoked":  res.added,
	}
	return s.emit(ctx, r, ev)
}

// isRevoked reports whether the access token jti is in the revocation
// feed.
func (s *Server) isRevoked(ctx context.Context, jti string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, "SELECT 1 FROM identity_revocations WHERE jti = ?", jti).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check revocation: %w", err)
	}
	return true, nil
}

// feedEntry is one revoked access token in the feed. Exp is in Unix
// seconds, rounded up: a verifier can forget the entry after it.
type feedEntry struct {
	Seq int64  `json:"seq"`
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
}

// feedPage is a revocation feed response. Next is the seq to pass as
// "after" in the following request.
type feedPage struct {
	Revocations []feedEntry `json:"revocations"`
	Next        int64       `json:"next"`
}

// revocationsAfter reads up to maxFeedPage feed rows after seq, dropping
// those that have expired; Next moves past every row read, expired or not.
func (s *Server) revocationsAfter(ctx context.Context, after int64) (feedPage, error) {
	page := feedPage{Revocations: []feedEntry{}, Next: after}
	rows, err := s.db.QueryContext(ctx, "SELECT seq, jti, expires_at FROM identity_revocations WHERE seq > ? ORDER BY seq LIMIT ?", after, maxFeedPage)
	if err != nil {
		return feedPage{}, fmt.Errorf("read revocation feed: %w", err)
	}
	defer rows.Close()
	now := s.now().UnixMilli()
	for rows.Next() {
		var (
			e   feedEntry
			exp int64
		)
		if err := rows.Scan(&e.Seq, &e.JTI, &exp); err != nil {
			return feedPage{}, fmt.Errorf("read revocation feed: %w", err)
		}
		page.Next = e.Seq
		if exp > now {
			e.Exp = (exp + 999) / 1000
			page.Revocations = append(page.Revocations, e)
		}
	}
	if err := rows.Err(); err != nil {
		return feedPage{}, fmt.Errorf("read revocation feed: %w", err)
	}
	return page, nil
}

// parseFeedQuery reads the feed's "after" and "wait" parameters.
func parseFeedQuery(raw string) (after int64, wait time.Duration, err error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, 0, ErrInvalidRequest.WithDescription("malformed query string")
	}
	get := func(name string, limit int64) (int64, error) {
		vs, ok := q[name]
		if !ok {
			return 0, nil
		}
		if len(vs) != 1 {
			return 0, ErrInvalidRequest.WithDescription("parameter %q is repeated", name)
		}
		n, err := strconv.ParseInt(vs[0], 10, 64)
		if err != nil || n < 0 || n > limit {
			return 0, ErrInvalidRequest.WithDescription("parameter %q must be an integer from 0 to %d", name, limit)
		}
		return n, nil
	}
	if after, err = get("after", 1<<62); err != nil {
		return 0, 0, err
	}
	w, err := get("wait", maxFeedWait)
	if err != nil {
		return 0, 0, err
	}
	return after, time.Duration(w) * time.Second, nil
}

// handleRevocationFeed serves GET /oauth2/revocations?after=&wait=: the
// unexpired revocations after seq "after", in seq order. With nothing to
// report and wait > 0 it long-polls up to wait seconds. The feed is public:
// jti values are not secrets.
func (s *Server) handleRevocationFeed(w http.ResponseWriter, r *http.Request) {
	after, wait, err := parseFeedQuery(r.URL.RawQuery)
	if err != nil {
		s.metrics.tokenErrors.WithLabelValues("revocations", ErrInvalidRequest.Code).Inc()
		s.writeOAuthError(w, r, err)
		return
	}
	ctx := r.Context()
	deadline := time.Now().Add(wait)
	var poll *time.Ticker
	for {
		changed := s.mgmtState().feed.changed()
		page, err := s.revocationsAfter(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return // the client has gone
			}
			s.writeOAuthError(w, r, err)
			return
		}
		left := time.Until(deadline)
		if len(page.Revocations) > 0 || page.Next != after || left <= 0 {
			writeNoStoreJSON(w, page)
			return
		}
		if poll == nil {
			poll = time.NewTicker(feedPollInterval)
			defer poll.Stop()
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-poll.C:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}
