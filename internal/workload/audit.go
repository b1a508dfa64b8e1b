package workload

import (
	"context"
	"strconv"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// OCSF Authentication (3002), activity Logon (1): a workload presenting
// itself to the Workload API.
const (
	classAuthentication = 3002
	activityLogon       = 1
	auditBuffer         = 256
	auditBatch          = 100
)

// auditQueue forwards audit events to the control plane in batches. It
// never blocks an RPC: when the buffer is full an event is dropped and the
// drop is logged.
type auditQueue struct {
	a  *Agent
	ch chan *audit.Event
}

func newAuditQueue(a *Agent) *auditQueue {
	return &auditQueue{a: a, ch: make(chan *audit.Event, auditBuffer)}
}

func (q *auditQueue) add(e *audit.Event) {
	select {
	case q.ch <- e:
	default:
		q.a.log.Warn("audit event dropped: queue full", "status_detail", e.StatusDetail)
	}
}

// run posts queued events until ctx ends.
func (q *auditQueue) run(ctx context.Context) {
	for {
		var batch []*audit.Event
		select {
		case <-ctx.Done():
			return
		case e := <-q.ch:
			batch = append(batch, e)
		}
	fill:
		for len(batch) < auditBatch {
			select {
			case e := <-q.ch:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		q.post(ctx, batch)
	}
}

func (q *auditQueue) post(ctx context.Context, batch []*audit.Event) {
	cp, err := q.a.controlPlane()
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = cp.Events(pctx, batch)
		cancel()
	}
	if err != nil {
		q.a.log.Warn("audit events not delivered to the control plane", logCount, len(batch), logErr, err)
	}
}

// auditRefusal records a refused Workload API call; c may be partial (an
// attestation that failed half-way) or nil.
func (a *Agent) auditRefusal(rpc string, c *caller, reason string) {
	e := &audit.Event{
		ClassUID:     classAuthentication,
		ActivityID:   activityLogon,
		Time:         a.cfg.Now().UnixMilli(),
		SeverityID:   3,
		StatusID:     audit.StatusFailure,
		StatusDetail: reason,
		Message:      "workload API call refused",
		Unmapped:     map[string]any{"rpc": rpc},
	}
	a.mu.Lock()
	agentID := a.st.agentID.String()
	a.mu.Unlock()
	e.Unmapped["agent_id"] = agentID
	if c != nil {
		uid := strconv.FormatUint(uint64(c.UID), 10)
		e.Actor = &audit.Actor{User: &audit.User{UID: uid, Type: "unix"}}
		e.Unmapped["path"] = c.Path
		e.Unmapped["pid"] = c.PID
		e.Unmapped["gid"] = c.GID
		if c.SHA256 != "" {
			e.Unmapped["sha256"] = c.SHA256
		}
		a.log.Warn("workload API call refused", "rpc", rpc, logUID, c.UID, logPID, c.PID, logPath, c.Path, "reason", reason)
	} else {
		a.log.Warn("workload API call refused", "rpc", rpc, "reason", reason)
	}
	a.audit.add(e)
}
