package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Deny-list entry kinds.
const (
	denySPIFFEID = "spiffe_id"
	denySerial   = "serial"
)

// defaultDenyWait is the long-poll wait on the deny list.
const defaultDenyWait = 30 * time.Second

// DenyLister long-polls the control plane's deny list; every ControlPlane
// is one, also one made without a client certificate (the deny list is
// public).
type DenyLister interface {
	// DenyList returns the deny entries after sequence number after and
	// the sequence number to ask from next, holding the request up to wait
	// while there are none.
	DenyList(ctx context.Context, after int64, wait time.Duration) ([]DenyEntry, int64, error)
}

// denySet is the part of the deny list followed so far: the denied SPIFFE
// IDs and certificate serials (serialHex form) and the sequence number to
// ask after. Its owner guards it.
type denySet struct {
	seq     int64
	ids     map[string]bool
	serials map[string]bool
}

func newDenySet() denySet {
	return denySet{ids: map[string]bool{}, serials: map[string]bool{}}
}

// denied reports whether id or serial (serialHex form) is denied.
func (s *denySet) denied(id spiffeid.ID, serial string) bool {
	return s.ids[id.String()] || (serial != "" && s.serials[serial])
}

// add records entries and the next sequence number; it reports whether
// anything changed. Malformed entries are logged and skipped.
func (s *denySet) add(entries []DenyEntry, next int64, log *slog.Logger) bool {
	for _, e := range entries {
		switch e.Kind {
		case denySPIFFEID:
			id, err := spiffeid.FromString(e.Value)
			if err != nil {
				log.Warn("ignored malformed deny entry", "seq", e.Seq, logErr, err)
				continue
			}
			s.ids[id.String()] = true
		case denySerial:
			v := normalizeSerial(e.Value)
			if v == "" {
				log.Warn("ignored malformed deny entry", "seq", e.Seq)
				continue
			}
			s.serials[v] = true
		default:
			log.Warn("ignored deny entry of unknown kind", "seq", e.Seq, "kind", e.Kind)
		}
	}
	seqChanged := next > s.seq
	if seqChanged {
		s.seq = next
	}
	return len(entries) > 0 || seqChanged
}

// followDeny calls poll, one long poll returning the number of new
// entries, until ctx ends; after an error it retries with a backoff from
// 500 ms doubling to 10 s.
func followDeny(ctx context.Context, log *slog.Logger, poll func(context.Context) (int, error)) {
	const minBackoff, maxBackoff = 500 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		n, err := poll(ctx)
		if err == nil {
			backoff = minBackoff
			if n == 0 {
				// An empty answer: pause briefly so that a server that
				// does not hold long polls is not called in a tight loop.
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("deny list poll failed", logErr, err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// DenyList follows the control plane's deny list for a process that has
// no agent of its own (`bulwark gateway`, which gets its SVID from a local
// agent's Workload API): IsDenied answers from what Run has fetched so
// far. The list only grows; it is kept in memory. It is safe for
// concurrent use.
type DenyList struct {
	cp   DenyLister
	log  *slog.Logger
	wait time.Duration

	mu  sync.Mutex
	set denySet
}

// NewDenyList returns a follower of the deny list served through cp (e.g.
// NewControlPlane(serverURL, roots)(nil)). A nil logger discards.
func NewDenyList(cp DenyLister, logger *slog.Logger) (*DenyList, error) {
	if cp == nil {
		return nil, errors.New("deny list: a control plane client is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &DenyList{cp: cp, log: logger, wait: defaultDenyWait, set: newDenySet()}, nil
}

// Run long-polls the deny list until ctx ends, retrying after errors with
// a backoff; it returns nil once ctx is done.
func (d *DenyList) Run(ctx context.Context) error {
	followDeny(ctx, d.log, d.poll)
	return nil
}

// Sync fetches the entries not yet known without waiting for new ones, so
// that a process can start enforcing the whole deny list before it serves
// (Run's first long poll waits while the list has nothing new).
func (d *DenyList) Sync(ctx context.Context) error {
	if _, err := d.fetch(ctx, 0); err != nil {
		return fmt.Errorf("deny list: %w", err)
	}
	return nil
}

// poll makes one long poll and returns the number of new entries.
func (d *DenyList) poll(ctx context.Context) (int, error) { return d.fetch(ctx, d.wait) }

// fetch asks for the entries after the known ones, holding the request up
// to wait while there are none, and returns the number of new entries.
func (d *DenyList) fetch(ctx context.Context, wait time.Duration) (int, error) {
	d.mu.Lock()
	after := d.set.seq
	d.mu.Unlock()
	entries, next, err := d.cp.DenyList(ctx, after, wait)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.set.add(entries, next, d.log)
	d.mu.Unlock()
	if len(entries) > 0 {
		d.log.Info("deny list updated", logCount, len(entries))
	}
	return len(entries), nil
}

// IsDenied reports whether id, or the certificate serial (hex, any case,
// optional colons), is on the deny list followed so far. It has the
// signature of Agent.IsDenied, so that either can be a peer check.
func (d *DenyList) IsDenied(id spiffeid.ID, serial string) bool {
	serial = normalizeSerial(serial)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.set.denied(id, serial)
}

// denyLoop follows the deny list for the agent until ctx ends.
func (a *Agent) denyLoop(ctx context.Context) { followDeny(ctx, a.log, a.pollDeny) }

// pollDeny makes one long poll and returns the number of new entries.
func (a *Agent) pollDeny(ctx context.Context) (int, error) {
	cp, err := a.controlPlane()
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	after := a.st.deny.seq
	a.mu.Unlock()
	entries, next, err := cp.DenyList(ctx, after, a.cfg.DenyWait)
	if err != nil {
		return 0, err
	}
	a.applyDeny(entries, next)
	return len(entries), nil
}

// applyDeny records deny entries and withdraws every SVID they hit.
func (a *Agent) applyDeny(entries []DenyEntry, next int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := a.st.deny.add(entries, next, a.log)
	withdrawn := 0
	for id, sv := range a.st.svids {
		if a.st.denied(sv.id, sv.serial()) {
			delete(a.st.svids, id)
			withdrawn++
			a.log.Warn("workload SVID withdrawn by the deny list", logEntry, id, logSPIFFEID, sv.id.String(), logSerial, sv.serial())
		}
	}
	if a.st.denied(a.st.agentID, serialHex(a.st.agentChain[0].SerialNumber)) {
		a.log.Error("the agent's own identity is on the deny list", logSPIFFEID, a.st.agentID.String())
	}
	if changed || withdrawn > 0 {
		a.saveLocked()
	}
	if withdrawn > 0 {
		a.notifyLocked()
	}
}
