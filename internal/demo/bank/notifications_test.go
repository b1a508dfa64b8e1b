package bank

import (
	"net/http"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
)

// TestStatementIsDeniedByPolicy: notifications may not call the ledger, so a
// statement request ends in a 502 that says so, and the refusal is audited
// under the request's correlation id.
func TestStatementIsDeniedByPolicy(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	a := env.do(t, call{service: "notifications", method: http.MethodPost, path: "/v1/statements", user: "alice",
		headers: map[string]string{correlation.HeaderRequestID: "stmt-1"}})
	if a.status != http.StatusBadGateway || a.errorMessage(t) != "ledger refused the call (denied by policy)" {
		t.Fatalf("got %d %s", a.status, a.body)
	}
	calls := env.agents["notifications"].callsTo("ledger", http.MethodGet)
	if len(calls) != 1 || calls[0].status != http.StatusForbidden || calls[0].requestID != "stmt-1" {
		t.Errorf("calls to the ledger %+v", calls)
	}
	evs := env.rec.eventsWhere(func(e *audit.Event) bool { return e.Metadata.CorrelationUID == "stmt-1" })
	if len(evs) != 1 || evs[0].StatusID != audit.StatusFailure || evs[0].StatusDetail != "statement failed: ledger refused the call (denied by policy)" {
		t.Errorf("events %+v", evs)
	}
}

func TestNotifyChecksItsCaller(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	msg := notice{User: "alice", Message: "hello"}
	tests := []struct {
		name       string
		c          call
		wantStatus int
	}{
		{"the gateway cannot send notifications", call{peer: "gateway", user: "alice", body: msg}, http.StatusForbidden},
		{"ledger cannot send notifications", call{peer: "ledger", body: msg}, http.StatusForbidden},
		{"payments sends a notification", call{peer: "payments", body: msg}, http.StatusCreated},
		{"an empty message", call{peer: "payments", body: notice{User: "alice"}}, http.StatusBadRequest},
		{"a message without a user", call{peer: "payments", body: notice{Message: "x"}}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.service, tt.c.method, tt.c.path = "notifications", http.MethodPost, "/v1/notify"
			if a := env.do(t, tt.c); a.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", a.status, tt.wantStatus, a.body)
			}
		})
	}
	var notes struct{ Notifications []Notification }
	env.do(t, call{service: "notifications", method: http.MethodGet, path: "/v1/notifications", user: "alice"}).json(t, &notes)
	if len(notes.Notifications) != 1 || notes.Notifications[0].Message != "hello" {
		t.Errorf("notifications %+v", notes)
	}
}
