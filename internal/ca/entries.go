package ca

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Selector is one property a workload must have, e.g. {"unix", "uid:1001"}.
type Selector struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// String is the selector in the form ParseSelector reads.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Entry is a registration entry: the SPIFFE ID a workload gets when it
// matches every selector, through the agent ParentID (zero: any agent).
type Entry struct {
	ID        string
	SPIFFEID  spiffeid.ID
	ParentID  spiffeid.ID
	Selectors []Selector
	TTL       time.Duration // 0: the default SVID TTL
	CreatedAt time.Time
}

// Limits on entries.
const (
	maxSelectors   = 16
	maxSelectorLen = 4096
	agentPathRoot  = "agent"
)

// ParseSelector reads "unix:uid:1001", "unix:gid:100",
// "unix:path:/usr/bin/payments" or "unix:sha256:<64 hex digits>". No other
// selector exists.
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return Selector{}, fmt.Errorf("%w: selector longer than %d bytes", ErrInvalid, maxSelectorLen)
	}
	typ, value, ok := strings.Cut(s, ":")
	if !ok || typ != "unix" {
		return Selector{}, fmt.Errorf("%w: selector %q: only unix:uid, unix:gid, unix:path and unix:sha256 exist", ErrInvalid, clip(s))
	}
	sel, err := checkUnixSelector(value)
	if err != nil {
		return Selector{}, fmt.Errorf("%w: selector %q: %s", ErrInvalid, clip(s), err)
	}
	return Selector{Type: typ, Value: sel}, nil
}

// checkUnixSelector validates the value of a unix selector and returns
// its canonical form.
func checkUnixSelector(v string) (string, error) {
	key, arg, ok := strings.Cut(v, ":")
	if !ok || arg == "" {
		return "", errors.New("want KEY:VALUE")
	}
	switch key {
	case "uid", "gid":
		n, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			return "", fmt.Errorf("%s must be a decimal number below 2^32", key)
		}
		return key + ":" + strconv.FormatUint(n, 10), nil
	case "path":
		if !strings.HasPrefix(arg, "/") || path.Clean(arg) != arg || strings.ContainsRune(arg, 0) {
			return "", errors.New("path must be absolute and clean")
		}
		return v, nil
	case "sha256":
		b, err := hex.DecodeString(arg)
		if err != nil || len(b) != 32 {
			return "", errors.New("sha256 must be 64 hex digits")
		}
		return "sha256:" + hex.EncodeToString(b), nil
	default:
		return "", fmt.Errorf("unknown unix selector %q", key)
	}
}

// ParseSPIFFEID parses a SPIFFE ID of td, as the API reads it from
// requests: a valid SPIFFE ID with a path, in the trust domain.
func ParseSPIFFEID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: SPIFFE ID %q: %w", ErrInvalid, clip(s), err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("%w: SPIFFE ID %q is not in trust domain %s", ErrInvalid, clip(s), td)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("%w: SPIFFE ID %q has no path", ErrInvalid, clip(s))
	}
	return id, nil
}

// isAgentID reports whether id is an agent's identity (/agent/<name>).
func isAgentID(id spiffeid.ID) bool {
	rest, ok := strings.CutPrefix(id.Path(), "/"+agentPathRoot+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// validateEntry checks e and puts its selectors in canonical order.
func (a *Authority) validateEntry(e *Entry) error {
	if _, err := ParseSPIFFEID(a.cfg.TrustDomain, e.SPIFFEID.String()); err != nil {
		return err
	}
	if strings.HasPrefix(e.SPIFFEID.Path()+"/", "/"+agentPathRoot+"/") {
		return fmt.Errorf("%w: %s is reserved for agents", ErrInvalid, e.SPIFFEID)
	}
	if !e.ParentID.IsZero() && (!e.ParentID.MemberOf(a.cfg.TrustDomain) || !isAgentID(e.ParentID)) {
		return fmt.Errorf("%w: parent %s is not an agent of trust domain %s", ErrInvalid, e.ParentID, a.cfg.TrustDomain)
	}
	if len(e.Selectors) == 0 || len(e.Selectors) > maxSelectors {
		return fmt.Errorf("%w: an entry needs 1 to %d selectors", ErrInvalid, maxSelectors)
	}
	sels := make([]Selector, 0, len(e.Selectors))
	for _, s := range e.Selectors {
		p, err := ParseSelector(s.String())
		if err != nil {
			return err
		}
		sels = append(sels, p)
	}
	slices.SortFunc(sels, func(x, y Selector) int { return strings.Compare(x.String(), y.String()) })
	e.Selectors = slices.Compact(sels)
	if e.TTL < 0 || e.TTL > maxSVIDTTL || (e.TTL > 0 && e.TTL < 10*time.Second) {
		return fmt.Errorf("%w: TTL %s out of range (0 or 10s..%s)", ErrInvalid, e.TTL, maxSVIDTTL)
	}
	return nil
}

// CreateEntry validates e, gives it an ID ("ent_…") and a creation time,
// and stores it. The change is audited.
func (a *Authority) CreateEntry(ctx context.Context, e *Entry) error {
	actor := actorFor(ctx, spiffeid.ID{})
	if e == nil {
		return fmt.Errorf("create entry: %w: no entry", ErrInvalid)
	}
	if err := a.validateEntry(e); err != nil {
		a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actor,
			audit.Resource{Type: resEntry, Name: e.SPIFFEID.String()}))
		return fmt.Errorf("create entry: %w", err)
	}
	sels, err := json.Marshal(e.Selectors)
	if err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	id, now := "ent_"+randomHex(12), a.now()
	parent := ""
	if !e.ParentID.IsZero() {
		parent = e.ParentID.String()
	}
	if _, err := a.db.ExecContext(ctx, `INSERT INTO ca_entries (entry_id, spiffe_id, parent_id, selectors, ttl_ms, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, id, e.SPIFFEID.String(), parent, string(sels), e.TTL.Milliseconds(), now.UnixMilli()); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	e.ID, e.CreatedAt = id, time.UnixMilli(now.UnixMilli())
	ev := newEvent(classEntityManagement, actCreate, true, "registration entry created", actor,
		audit.Resource{Type: resEntry, UID: id, Name: e.SPIFFEID.String()})
	ev.Unmapped = map[string]any{"parent_id": parent, "selectors": selectorStrings(e.Selectors)}
	if err := a.emit(ctx, ev); err != nil {
		return fmt.Errorf("create entry: %w", err)
	}
	return nil
}

func selectorStrings(sels []Selector) []any {
	out := make([]any, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// ListEntries returns every entry, oldest first.
func (a *Authority) ListEntries(ctx context.Context) ([]Entry, error) {
	return a.queryEntries(ctx, "")
}

// EntriesForAgent returns the entries agent may serve: those whose parent
// is agent, or any agent.
func (a *Authority) EntriesForAgent(ctx context.Context, agent spiffeid.ID) ([]Entry, error) {
	if agent.IsZero() {
		return nil, fmt.Errorf("entries for agent: %w: no agent", ErrInvalid)
	}
	return a.queryEntries(ctx, agent.String())
}

// Entry returns one entry by ID.
func (a *Authority) Entry(ctx context.Context, id string) (Entry, error) {
	row := a.db.QueryRowContext(ctx, "SELECT entry_id, spiffe_id, parent_id, selectors, ttl_ms, created_at FROM ca_entries WHERE entry_id = ?", id)
	e, err := scanEntry(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, fmt.Errorf("entry %q: %w", clip(id), ErrNotFound)
	}
	return e, err
}

func (a *Authority) queryEntries(ctx context.Context, agent string) ([]Entry, error) {
	q, args := "SELECT entry_id, spiffe_id, parent_id, selectors, ttl_ms, created_at FROM ca_entries", []any{}
	if agent != "" {
		q += " WHERE parent_id = ? OR parent_id = ''"
		args = append(args, agent)
	}
	rows, err := a.db.QueryContext(ctx, q+" ORDER BY created_at, entry_id", args...)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	return out, nil
}

func scanEntry(row interface{ Scan(...any) error }) (Entry, error) {
	var (
		e                 Entry
		sid, parent, sels string
		ttlMs, createdMs  int64
	)
	if err := row.Scan(&e.ID, &sid, &parent, &sels, &ttlMs, &createdMs); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("read entry: %w", err)
	}
	var err error
	if e.SPIFFEID, err = spiffeid.FromString(sid); err != nil {
		return Entry{}, fmt.Errorf("entry %s: %w", e.ID, err)
	}
	if parent != "" {
		if e.ParentID, err = spiffeid.FromString(parent); err != nil {
			return Entry{}, fmt.Errorf("entry %s: %w", e.ID, err)
		}
	}
	if err := json.Unmarshal([]byte(sels), &e.Selectors); err != nil {
		return Entry{}, fmt.Errorf("entry %s: selectors: %w", e.ID, err)
	}
	e.TTL, e.CreatedAt = time.Duration(ttlMs)*time.Millisecond, time.UnixMilli(createdMs)
	return e, nil
}

// DeleteEntry removes an entry; SVIDs already issued for it stay valid
// until they expire (revoke them to stop them sooner). Audited.
func (a *Authority) DeleteEntry(ctx context.Context, id string) error {
	actor := actorFor(ctx, spiffeid.ID{})
	res, err := a.db.ExecContext(ctx, "DELETE FROM ca_entries WHERE entry_id = ?", id)
	if err != nil {
		return fmt.Errorf("delete entry: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete entry: %w", err)
	}
	if n == 0 {
		err := fmt.Errorf("delete entry %q: %w", clip(id), ErrNotFound)
		a.emitRefusal(ctx, newEvent(classEntityManagement, actDelete, false, err.Error(), actor,
			audit.Resource{Type: resEntry, UID: strconv.Quote(clip(id))}))
		return err
	}
	if err := a.emit(ctx, newEvent(classEntityManagement, actDelete, true, "registration entry deleted", actor,
		audit.Resource{Type: resEntry, UID: id})); err != nil {
		return fmt.Errorf("delete entry: %w", err)
	}
	return nil
}
