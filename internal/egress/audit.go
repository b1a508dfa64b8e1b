package egress

import (
	"strings"
	"unicode/utf8"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// maxAuditHost bounds the attacker-controlled host name copied into an
// audit event.
const maxAuditHost = 253

// AuditEvent returns the refusal as an OCSF Network Activity "Refuse"
// event (failure; high severity for cloud metadata addresses, medium
// otherwise), for an OnBlocked hook to hand to the audit log. The
// caller adds correlation and actor.
func (e BlockedError) AuditEvent() audit.Event {
	host := strings.ToValidUTF8(e.Host, "\uFFFD")
	if len(host) > maxAuditHost {
		host = host[:maxAuditHost]
		for !utf8.ValidString(host) {
			host = host[:len(host)-1]
		}
	}
	sev := 3
	if e.Reason == ReasonMetadata {
		sev = 4
	}
	ev := audit.Event{
		ClassUID:     4001,
		ActivityID:   5,
		SeverityID:   sev,
		StatusID:     audit.StatusFailure,
		StatusDetail: e.Reason,
		Message:      "outbound connection refused by egress guard",
		Resources:    []audit.Resource{{Type: "network_endpoint", Name: host}},
	}
	if e.IP.IsValid() {
		ev.Resources[0].UID = e.IP.String()
	}
	return ev
}
