package ca

import (
	"context"
	"log/slog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// MTLSRefusalEvent is the audit event of a peer refused by an sdk/mtls
// configuration: OCSF Authentication / Logon, failed, naming the SPIFFE ID
// and serial the peer's certificate claimed and why it was refused (another
// CA, expired, unauthorized ID, a resumed session no longer valid).
func MTLSRefusalEvent(r mtls.Refusal) *audit.Event {
	detail := "peer refused"
	if r.Err != nil {
		detail = clip(r.Err.Error())
	}
	e := newEvent(classAuthentication, actLogon, false, detail, &audit.Actor{AppName: "mtls " + string(r.Side)})
	e.Message = "mutual TLS peer refused"
	if !r.PeerID.IsZero() || r.Serial != "" {
		e.Resources = []audit.Resource{{Type: resSVID, UID: r.Serial, Name: r.PeerID.String()}}
	}
	e.Unmapped = map[string]any{"side": string(r.Side), "resumed": r.Resumed}
	e.Metadata.Product = "bulwark mtls"
	return e
}

// AuditMTLSRefusals returns an mtls.WithRefusalHook hook that appends every
// refusal to the audit log a. A failure to audit is logged; the peer is
// refused either way.
func AuditMTLSRefusals(a Auditor, logger *slog.Logger) func(mtls.Refusal) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(r mtls.Refusal) {
		if _, err := a.Append(context.Background(), []*audit.Event{MTLSRefusalEvent(r)}); err != nil {
			logger.Error("ca: audit an mTLS refusal", slog.Any(logKeyError, err))
		}
	}
}
