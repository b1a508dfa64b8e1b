package ca

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
)

// OCSF classes and activities of CA events.
const (
	classAuthentication   = 3002 // joins
	classEntityManagement = 3004 // SVIDs, entries, intermediates, deny list
	classAPIActivity      = 6003 // refused requests

	actCreate  = 1  // Entity Management: Create (issuance, entry, intermediate, token)
	actDelete  = 4  // Entity Management: Delete (entry)
	actEnroll  = 6  // Entity Management: Enroll (agent join)
	actSuspend = 12 // Entity Management: Suspend (quarantine)
	actDisable = 9  // Entity Management: Disable (revocation)
	actLogon   = 1  // Authentication: Logon (agent join)
)

// Resource types in CA events.
const (
	resSVID         = "x509_svid"
	resJWTSVID      = "jwt_svid"
	resEntry        = "registration_entry"
	resAgent        = "agent"
	resIntermediate = "ca_intermediate"
	resJoinToken    = "join_token"
	resDenyEntry    = "deny_entry"
)

// newEvent starts an event; ok selects success or failure.
func newEvent(class, activity int, ok bool, detail string, actor *audit.Actor, res ...audit.Resource) *audit.Event {
	e := &audit.Event{ClassUID: class, ActivityID: activity, StatusDetail: detail, StatusID: audit.StatusFailure, SeverityID: 3,
		Actor: actor, Resources: res}
	if ok {
		e.StatusID, e.SeverityID = audit.StatusSuccess, 1
	}
	return e
}

// emit appends e to the audit log. A failure to audit fails the
// operation: nothing security-relevant happens unrecorded.
func (a *Authority) emit(ctx context.Context, e *audit.Event) error {
	e.Metadata.Product = "bulwark ca"
	if _, err := a.audit.Append(ctx, []*audit.Event{e}); err != nil {
		return fmt.Errorf("audit %d/%d: %w", e.ClassUID, e.ActivityID, err)
	}
	return nil
}

// emitRefusal audits a refused operation. The refusal stands whether or
// not the event could be written; a failure to write it is logged.
func (a *Authority) emitRefusal(ctx context.Context, e *audit.Event) {
	if err := a.emit(ctx, e); err != nil {
		a.log.Error("ca: audit refusal", slog.Any(logKeyError, err))
	}
}

// actorFor is the actor of an operation: the agent if there is one, else
// the admin credential of the request, else the CA itself.
func actorFor(ctx context.Context, agent spiffeid.ID) *audit.Actor {
	if !agent.IsZero() {
		return &audit.Actor{AppName: "bulwark agent", AppUID: agent.String()}
	}
	if id := adminauth.CredentialID(ctx); id != "" {
		return &audit.Actor{User: &audit.User{UID: id, Type: "admin"}}
	}
	return &audit.Actor{AppName: "bulwark ca"}
}

// maxEchoLen bounds how much of a caller's input an error message or an
// audit event repeats.
const maxEchoLen = 128

// clip shortens s for repeating it in an error or event; format it with
// %q so that invalid UTF-8 and control characters are escaped.
func clip(s string) string {
	if len(s) <= maxEchoLen {
		return s
	}
	return s[:maxEchoLen] + "..."
}
