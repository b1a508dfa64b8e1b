package node

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
)

func TestAuditEvents(t *testing.T) {
	t.Parallel()
	svc := Service{Name: "ledger", ID: spiffeid.RequireFromString("spiffe://td/ns/bank/sa/ledger")}
	payments := spiffeid.RequireFromString("spiffe://td/ns/bank/sa/payments")
	now := time.Unix(1700000000, 0)
	base := mesh.DenialEvent{Time: now, Peer: payments, Self: svc.ID, Action: "call", Method: http.MethodPost, Path: "/v1/entries",
		RequestID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", BundleVersion: 3}
	with := func(f func(*mesh.DenialEvent)) mesh.DenialEvent { d := base; f(&d); return d }
	tests := []struct {
		name                    string
		ev                      *audit.Event
		class, activity, status int
		detail, actorUser       string
	}{
		{"policy denial", deniedEvent(svc, base), 6003, 1, audit.StatusFailure, "denied by policy", ""},
		{"stale bundle", deniedEvent(svc, with(func(d *mesh.DenialEvent) { d.Refusal = "stale"; d.Method = http.MethodGet })), 6003, 2, audit.StatusFailure, "denied by policy: bundle stale", ""},
		{"expired token", deniedEvent(svc, with(func(d *mesh.DenialEvent) { d.TokenRefusal = authn.ReasonExpired })), 3002, 1, audit.StatusFailure, "token expired", ""},
		{"forged token", deniedEvent(svc, with(func(d *mesh.DenialEvent) { d.TokenRefusal = authn.ReasonBadSignature })), 3002, 1, audit.StatusFailure, "internal token refused: bad_signature", ""},
		{"revoked peer", deniedEvent(svc, with(func(d *mesh.DenialEvent) { d.Refusal = mesh.RefusalPeerDenied; d.Method = http.MethodDelete })), 6003, 4, audit.StatusFailure, "peer revoked or quarantined", ""},
		{"allowed for a user", allowedEvent(svc, mesh.AllowedEvent{Time: now, Peer: payments, Self: svc.ID, Method: http.MethodGet, Path: "/x",
			RequestID: "req-1", TraceID: base.TraceID, User: "alice", Client: "bank-api"}), 6003, 2, audit.StatusSuccess, "allowed by policy", "alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.ev
			if err := e.Normalize(now); err != nil {
				t.Fatalf("invalid event: %v", err)
			}
			if e.ClassUID != tc.class || e.ActivityID != tc.activity || e.StatusID != tc.status || e.StatusDetail != tc.detail {
				t.Errorf("event %d/%d status %d %q, want %d/%d %d %q", e.ClassUID, e.ActivityID, e.StatusID, e.StatusDetail, tc.class, tc.activity, tc.status, tc.detail)
			}
			if e.Metadata.CorrelationUID != "req-1" || e.Metadata.TraceUID != base.TraceID {
				t.Errorf("correlation %+v", e.Metadata)
			}
			if e.Actor == nil || e.Actor.AppUID != payments.String() || e.Actor.AppName != "payments" {
				t.Errorf("actor %+v", e.Actor)
			}
			if tc.actorUser != "" && (e.Actor.User == nil || e.Actor.User.UID != tc.actorUser) {
				t.Errorf("actor user %+v, want %s", e.Actor.User, tc.actorUser)
			}
			if len(e.Resources) != 1 || e.Resources[0].UID != svc.ID.String() || e.Resources[0].Name != "ledger" {
				t.Errorf("resources %+v", e.Resources)
			}
			if p, _ := e.Unmapped["path"].(string); strings.Contains(p, "?") {
				t.Errorf("path with query %q", p)
			}
		})
	}
}
