package node

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/forward"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// Audit event conventions of the data plane (OCSF).
const (
	classAPIActivity    = 6003
	classAuthentication = 3002
	classAppLifecycle   = 6002
	activityLogon       = 1
	activityUpdate      = 8
	severityInfo        = 1
	severityMedium      = 3
	product             = "bulwark agent"
	resourceService     = "service"
)

// apiActivity maps an HTTP method to the API Activity's activity: 1 Create
// for POST, PUT and PATCH, 4 Delete for DELETE, 2 Read otherwise.
func apiActivity(method string) int {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return 1
	case http.MethodDelete:
		return 4
	default:
		return 2
	}
}

// actor is the caller of a hop: the peer workload, and the end user when
// the internal token named one.
func actor(peer, user, client string) *audit.Actor {
	a := &audit.Actor{AppName: serviceName(peer), AppUID: peer}
	if user != "" {
		a.User = &audit.User{UID: user, Type: "User"}
	} else if client != "" {
		a.User = &audit.User{UID: client, Type: "Client"}
	}
	return a
}

// serviceName is the last path segment of a SPIFFE ID ("payments" of
// spiffe://td/ns/bank/sa/payments).
func serviceName(id string) string {
	if i := strings.LastIndexByte(id, '/'); i >= 0 && i < len(id)-1 && strings.HasPrefix(id, "spiffe://") && strings.Count(id, "/") > 2 {
		return id[i+1:]
	}
	return ""
}

func hopUnmapped(e map[string]any, method, path, action string, bundle int64, client string) map[string]any {
	e["method"], e["path"], e["action"] = method, path, action
	if bundle != 0 {
		e["bundle_version"] = bundle
	}
	if client != "" {
		e["client_id"] = client
	}
	return e
}

// deniedEvent is the audit event of a refused hop: class 3002 when the
// internal token was refused, 6003 when the policy denied.
func deniedEvent(s Service, d mesh.DenialEvent) *audit.Event {
	e := &audit.Event{
		ClassUID: classAPIActivity, ActivityID: apiActivity(d.Method), Time: d.Time.UnixMilli(),
		SeverityID: severityMedium, StatusID: audit.StatusFailure,
		Actor:     actor(d.Peer.String(), d.User, d.Client),
		Resources: []audit.Resource{{Type: resourceService, UID: d.Self.String(), Name: s.Name}},
		Metadata:  audit.Metadata{CorrelationUID: d.RequestID, TraceUID: d.TraceID, Product: product},
	}
	u := hopUnmapped(map[string]any{}, d.Method, d.Path, d.Action, d.BundleVersion, d.Client)
	switch {
	case d.TokenRefusal != "":
		e.ClassUID, e.ActivityID = classAuthentication, activityLogon
		e.StatusDetail = "internal token refused: " + d.TokenRefusal
		if d.TokenRefusal == authn.ReasonExpired {
			e.StatusDetail = "token expired"
		}
	case d.Refusal == mesh.RefusalPeerDenied:
		e.StatusDetail = "peer revoked or quarantined"
	case d.Refusal != "":
		e.StatusDetail = "denied by policy: bundle " + d.Refusal
	default:
		e.StatusDetail = "denied by policy"
	}
	if len(d.Reasons) > 0 {
		u["reasons"] = strings.Join(d.Reasons, ",")
	}
	if len(d.Errors) > 0 {
		u["evaluation_errors"] = len(d.Errors)
	}
	e.Unmapped = u
	return e
}

// allowedEvent is the audit event of an allowed hop.
func allowedEvent(s Service, a mesh.AllowedEvent) *audit.Event {
	u := hopUnmapped(map[string]any{}, a.Method, a.Path, a.Action, a.BundleVersion, a.Client)
	if len(a.Reasons) > 0 {
		u["reasons"] = strings.Join(a.Reasons, ",")
	}
	return &audit.Event{
		ClassUID: classAPIActivity, ActivityID: apiActivity(a.Method), Time: a.Time.UnixMilli(),
		SeverityID: severityInfo, StatusID: audit.StatusSuccess, StatusDetail: "allowed by policy",
		Actor:     actor(a.Peer.String(), a.User, a.Client),
		Resources: []audit.Resource{{Type: resourceService, UID: a.Self.String(), Name: s.Name}},
		Metadata:  audit.Metadata{CorrelationUID: a.RequestID, TraceUID: a.TraceID, Product: product},
		Unmapped:  u,
	}
}

// bundleRefusedEvent is the audit event of a policy bundle the agent
// refused (tampered, unknown key, rollback, expired, malformed).
func bundleRefusedEvent(r authz.BundleRefusal) *audit.Event {
	return &audit.Event{
		ClassUID: classAppLifecycle, ActivityID: activityUpdate, SeverityID: 4, StatusID: audit.StatusFailure,
		StatusDetail: "policy bundle refused: " + string(r.Reason),
		Actor:        &audit.Actor{AppName: product},
		Resources:    []audit.Resource{{Type: "policy_bundle", Name: r.Source}},
		Metadata:     audit.Metadata{Product: product},
		Unmapped:     map[string]any{"version": r.Version, "active_version": r.ActiveVersion},
	}
}

func (n *Node) onDenied(s Service) func(mesh.DenialEvent) {
	return func(d mesh.DenialEvent) { n.events.send(deniedEvent(s, d)) }
}

func (n *Node) onAllowed(s Service) func(mesh.AllowedEvent) {
	return func(a mesh.AllowedEvent) { n.events.send(allowedEvent(s, a)) }
}

// eventQueue is how many events wait in memory for the spool before a
// sender writes its own event to the spool directly.
const eventQueue = 4096

// maxEventBatch is the most events spooled in one write.
const maxEventBatch = 256

// eventSink hands audit events from request goroutines to the forwarder's
// spool in batches, off the request path; when its queue is full a sender
// spools its event itself, so no event is ever dropped.
type eventSink struct {
	fw  *forward.Forwarder
	log *slog.Logger
	ch  chan *audit.Event

	mu     sync.RWMutex
	closed bool
}

func newEventSink(fw *forward.Forwarder, log *slog.Logger) *eventSink {
	return &eventSink{fw: fw, log: log, ch: make(chan *audit.Event, eventQueue)}
}

// send queues e for the spool.
func (s *eventSink) send(e *audit.Event) {
	s.mu.RLock()
	if !s.closed {
		select {
		case s.ch <- e:
			s.mu.RUnlock()
			return
		default:
		}
	}
	s.mu.RUnlock()
	s.spool([]*audit.Event{e})
}

func (s *eventSink) spool(batch []*audit.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.fw.Send(ctx, batch...); err != nil {
		s.log.Error("mesh node: spool audit events", logKeyError, err, "count", len(batch))
	}
}

// run spools queued events until close, then the rest.
func (s *eventSink) run() {
	for e := range s.ch {
		batch := []*audit.Event{e}
	fill:
		for len(batch) < maxEventBatch {
			select {
			case e, ok := <-s.ch:
				if !ok {
					break fill
				}
				batch = append(batch, e)
			default:
				break fill
			}
		}
		s.spool(batch)
	}
}

// close stops queueing; run returns once the queue is spooled. Later
// events are spooled by their senders.
func (s *eventSink) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}
