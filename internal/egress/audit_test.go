package egress

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAuditEventNormalizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    BlockedError
		sev  int
	}{
		{"metadata", BlockedError{Host: "169.254.169.254", IP: netip.MustParseAddr("169.254.169.254"), Reason: ReasonMetadata}, 4},
		{"scheme", BlockedError{Host: "example.com", Reason: ReasonScheme}, 3},
		{"hostile host", BlockedError{Host: strings.Repeat("é", 5000) + "\xff", Reason: ReasonBadURL}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := tc.e.AuditEvent()
			if err := ev.Normalize(time.Now()); err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			if ev.ClassName != "Network Activity" || ev.ActivityName != "Refuse" || ev.Status != "Failure" {
				t.Errorf("event = %s/%s/%s", ev.ClassName, ev.ActivityName, ev.Status)
			}
			if ev.SeverityID != tc.sev || ev.StatusDetail != tc.e.Reason {
				t.Errorf("severity %d detail %q", ev.SeverityID, ev.StatusDetail)
			}
			if len(ev.Resources[0].Name) > maxAuditHost {
				t.Errorf("host not truncated: %d bytes", len(ev.Resources[0].Name))
			}
		})
	}
}
