package ca

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Kinds of deny entries.
const (
	DenyKindSPIFFEID = "spiffe_id"
	DenyKindSerial   = "serial"
)

// DenyEntry is one entry of the deny list: a revoked certificate serial
// or a quarantined SPIFFE ID. Seq orders the list.
type DenyEntry struct {
	Seq       int64
	Kind      string // DenyKindSPIFFEID or DenyKindSerial
	Value     string
	Reason    string
	CreatedAt time.Time
}

// Limits on deny entries.
const (
	maxReasonLen   = 256
	maxDenyListLen = 1000
	maxSerialHex   = 40 // 20 bytes, the RFC 5280 maximum
)

// denyIndex is the in-memory deny list, refreshed from the database.
type denyIndex struct {
	refreshMu sync.Mutex // one refresh at a time

	mu      sync.RWMutex
	ids     map[string]struct{}
	serials map[string]struct{}
	last    int64
	changed chan struct{}
}

func (d *denyIndex) init() {
	d.ids, d.serials, d.changed = map[string]struct{}{}, map[string]struct{}{}, make(chan struct{})
}

// normalizeSerial is the canonical form of a hex serial: lowercase without
// leading zeros.
func normalizeSerial(s string) string { return strings.TrimLeft(strings.ToLower(s), "0") }

// Revoke puts a certificate serial (hex) on the deny list: agents stop
// serving it and the CA refuses to renew it. The serial must be in the
// inventory. Revoking twice is not an error.
func (a *Authority) Revoke(ctx context.Context, serialHex, reason string) error {
	serial, err := parseSerial(serialHex)
	if err == nil {
		err = checkReason(reason)
	}
	if err == nil {
		var n int
		if qerr := a.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ca_certificates WHERE serial = ?", serial).Scan(&n); qerr != nil {
			return fmt.Errorf("revoke: %w", qerr)
		}
		if n == 0 {
			err = fmt.Errorf("revoke: certificate %s: %w", serial, ErrNotFound)
		}
	}
	return a.addDeny(ctx, DenyKindSerial, serial, reason, actDisable, resSVID, err)
}

// Quarantine puts a SPIFFE ID on the deny list: no SVID is issued for it
// any more (nor through it, for an agent) and agents stop serving it.
func (a *Authority) Quarantine(ctx context.Context, id spiffeid.ID, reason string) error {
	err := a.checkMember(id)
	if err == nil {
		err = checkReason(reason)
	}
	return a.addDeny(ctx, DenyKindSPIFFEID, id.String(), reason, actSuspend, resDenyEntry, err)
}

// addDeny inserts a deny entry unless invalid is set, audits the outcome,
// and refreshes the index.
func (a *Authority) addDeny(ctx context.Context, kind, value, reason string, activity int, resType string, invalid error) error {
	actor := actorFor(ctx, spiffeid.ID{})
	res := audit.Resource{Type: resType, UID: value}
	if invalid != nil {
		a.emitRefusal(ctx, newEvent(classEntityManagement, activity, false, invalid.Error(), actor, res))
		return invalid
	}
	now := a.now().UnixMilli()
	err := a.db.InTx(ctx, func(tx *store.Tx) error {
		if tx.Driver() == store.Postgres {
			// Commit deny entries in seq order, so that a follower that
			// has seen seq N never misses a smaller one committed later.
			if _, err := tx.ExecContext(ctx, "LOCK TABLE ca_deny IN EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM ca_deny WHERE kind = ? AND value = ?", kind, value).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO ca_deny (kind, value, reason, created_at) VALUES (?, ?, ?, ?)", kind, value, reason, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("deny %s %s: %w", kind, value, err)
	}
	e := newEvent(classEntityManagement, activity, true, reason, actor, res)
	e.Unmapped = map[string]any{"deny_kind": kind}
	if err := a.emit(ctx, e); err != nil {
		return fmt.Errorf("deny %s %s: %w", kind, value, err)
	}
	return a.refreshDeny(ctx)
}

// parseSerial validates a hex serial and returns its canonical form.
func parseSerial(s string) (string, error) {
	if s == "" || len(s) > maxSerialHex+2 {
		return "", fmt.Errorf("%w: serial must be 1 to %d hex digits", ErrInvalid, maxSerialHex)
	}
	n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(s), "0x"), 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: serial %q is not a positive hex number", ErrInvalid, clip(s))
	}
	return n.Text(16), nil
}

// checkReason allows a short single-line reason.
func checkReason(r string) error {
	if len(r) > maxReasonLen || !utf8.ValidString(r) {
		return fmt.Errorf("%w: reason must be valid UTF-8 of at most %d bytes", ErrInvalid, maxReasonLen)
	}
	for _, c := range r {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: reason contains a control character", ErrInvalid)
		}
	}
	return nil
}

// DenyList returns the deny entries after seq after, in order (at most
// 1000 at a time).
func (a *Authority) DenyList(ctx context.Context, after int64) ([]DenyEntry, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT seq, kind, value, reason, created_at FROM ca_deny WHERE seq > ? ORDER BY seq LIMIT ?",
		after, maxDenyListLen)
	if err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	defer rows.Close()
	var out []DenyEntry
	for rows.Next() {
		var (
			e  DenyEntry
			ms int64
		)
		if err := rows.Scan(&e.Seq, &e.Kind, &e.Value, &e.Reason, &ms); err != nil {
			return nil, fmt.Errorf("deny list: %w", err)
		}
		e.CreatedAt = time.UnixMilli(ms)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	return out, nil
}

// DenyChanged returns a channel that is closed at the next new deny entry
// (for long polls). Call it again for the following change.
func (a *Authority) DenyChanged() <-chan struct{} {
	a.deny.mu.RLock()
	defer a.deny.mu.RUnlock()
	return a.deny.changed
}

// IsDenied reports whether the SPIFFE ID or the serial (hex; empty: not
// checked) is on the deny list.
func (a *Authority) IsDenied(id spiffeid.ID, serialHex string) bool {
	a.deny.mu.RLock()
	defer a.deny.mu.RUnlock()
	if !id.IsZero() {
		if _, ok := a.deny.ids[id.String()]; ok {
			return true
		}
	}
	if serialHex != "" {
		if _, ok := a.deny.serials[normalizeSerial(serialHex)]; ok {
			return true
		}
	}
	return false
}

// refreshDeny loads deny entries added since the last refresh (by this or
// another replica) and wakes the long polls if there are any.
func (a *Authority) refreshDeny(ctx context.Context) error {
	a.deny.refreshMu.Lock()
	defer a.deny.refreshMu.Unlock()
	for {
		a.deny.mu.RLock()
		last := a.deny.last
		a.deny.mu.RUnlock()
		entries, err := a.DenyList(ctx, last)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return nil
		}
		a.deny.mu.Lock()
		for _, e := range entries {
			switch e.Kind {
			case DenyKindSPIFFEID:
				a.deny.ids[e.Value] = struct{}{}
			case DenyKindSerial:
				a.deny.serials[e.Value] = struct{}{}
			}
			a.deny.last = e.Seq
		}
		close(a.deny.changed)
		a.deny.changed = make(chan struct{})
		a.deny.mu.Unlock()
		if len(entries) < maxDenyListLen {
			return nil
		}
	}
}
