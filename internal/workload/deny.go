package workload

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Deny-list entry kinds.
const (
	denySPIFFEID = "spiffe_id"
	denySerial   = "serial"
)

// denyLoop long-polls the deny list until ctx ends; after an error it
// retries with a backoff from 500 ms doubling to 10 s.
func (a *Agent) denyLoop(ctx context.Context) {
	const minBackoff, maxBackoff = 500 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		n, err := a.pollDeny(ctx)
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
		a.log.Warn("deny list poll failed", logErr, err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// pollDeny makes one long poll and returns the number of new entries.
func (a *Agent) pollDeny(ctx context.Context) (int, error) {
	cp, err := a.controlPlane()
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	after := a.st.denySeq
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
	for _, e := range entries {
		switch e.Kind {
		case denySPIFFEID:
			id, err := spiffeid.FromString(e.Value)
			if err != nil {
				a.log.Warn("ignored malformed deny entry", "seq", e.Seq, logErr, err)
				continue
			}
			a.st.deniedIDs[id.String()] = true
		case denySerial:
			s := normalizeSerial(e.Value)
			if s == "" {
				a.log.Warn("ignored malformed deny entry", "seq", e.Seq)
				continue
			}
			a.st.deniedSer[s] = true
		default:
			a.log.Warn("ignored deny entry of unknown kind", "seq", e.Seq, "kind", e.Kind)
		}
	}
	seqChanged := next > a.st.denySeq
	if seqChanged {
		a.st.denySeq = next
	}
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
	if len(entries) > 0 || withdrawn > 0 || seqChanged {
		a.saveLocked()
	}
	if withdrawn > 0 {
		a.notifyLocked()
	}
}
