package identity

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/sdk/authn"
)

// RefusalEvent is the audit event of an access token refused by an
// sdk/authn verifier: OCSF Authentication / Service Ticket Request, failed,
// with the stable refusal reason as the status detail. It names the token
// only by its jti, and only when the token's signature verified.
func RefusalEvent(r authn.Refusal) *audit.Event {
	e := newEvent(classAuthentication, actServiceTicket, false, r.Reason)
	e.Message = "access token refused"
	e.Metadata.Product = "bulwark authn"
	if r.Subject != "" || r.ClientID != "" || r.JTI != "" {
		e.Actor = &audit.Actor{AppUID: r.ClientID, SessionUID: r.JTI}
		if r.Subject != "" {
			e.Actor.User = &audit.User{UID: r.Subject}
		}
	}
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		e.SrcEndpoint = &audit.Endpoint{IP: host}
		e.SrcEndpoint.Port, _ = strconv.Atoi(port)
	}
	if r.Path != "" {
		e.Resources = []audit.Resource{{Type: "http_route", Name: r.Method + " " + r.Path}}
	}
	if r.Detail != "" {
		e.Unmapped = map[string]any{"detail": r.Detail}
	}
	return e
}

// AuditRefusals returns an authn.Config.OnRefusal hook that appends every
// refusal to the audit log a. A failure to audit is logged; the request is
// refused either way.
func AuditRefusals(a Auditor, logger *slog.Logger) func(context.Context, authn.Refusal) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, r authn.Refusal) {
		if _, err := a.Append(ctx, []*audit.Event{RefusalEvent(r)}); err != nil {
			logger.ErrorContext(ctx, "auditing a token refusal failed", "reason", r.Reason, "error", err)
		}
	}
}
