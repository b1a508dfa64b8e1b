package workload_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/workload"
)

// TestSVIDSource: the in-process source serves the agent's current SVID
// for an entry, follows a revocation to the replacement SVID, and fails
// once the ID is quarantined; the agent's own identity authenticates it to
// the control plane's enforcement-point endpoints.
func TestSVIDSource(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-src", nil)
	td := cp.srv.CA().TrustDomain()
	id := spiffeid.RequireFromString("spiffe://" + td.String() + "/ns/bank/sa/payments")
	createEntry(t, cp, id.String(), a.id, "unix:uid:4242")
	src := a.agent.SVIDSource(id)
	unknown := a.agent.SVIDSource(spiffeid.RequireFromString("spiffe://" + td.String() + "/ns/bank/sa/other"))

	if got := a.agent.ID(); got != a.id {
		t.Fatalf("agent ID %s, want %s", got, a.id)
	}
	var first string
	eventually(t, 10*time.Second, "SVID issued", func() error {
		sv, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if sv.ID != id || sv.PrivateKey == nil || len(sv.Certificates) == 0 {
			return fmt.Errorf("SVID %+v", sv)
		}
		first = sv.Certificates[0].SerialNumber.Text(16)
		return nil
	})
	if _, err := unknown.GetX509SVID(); !errors.Is(err, workload.ErrNoSVID) {
		t.Fatalf("unknown ID: err = %v, want ErrNoSVID", err)
	}
	b, err := src.GetX509BundleForTrustDomain(td)
	if err != nil || len(b.X509Authorities()) == 0 {
		t.Fatalf("bundle: %v", err)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.example")); err == nil {
		t.Fatal("a bundle for a foreign trust domain")
	}

	t.Run("control plane accepts the agent's identity", func(t *testing.T) {
		hc := a.agent.ControlPlaneClient()
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(cp.srv.URL() + "/v1/policy/bundle")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			t.Fatalf("status %d: the agent's SVID is not accepted", resp.StatusCode)
		}
	})

	ctx := context.Background()
	if err := cp.srv.CA().Revoke(ctx, first, "key compromise"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "revoked SVID replaced", func() error {
		sv, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if s := sv.Certificates[0].SerialNumber.Text(16); s == first {
			return fmt.Errorf("still serving the revoked serial %s", s)
		}
		return nil
	})
	if err := cp.srv.CA().Quarantine(ctx, id, "test quarantine"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "quarantined ID withdrawn", func() error {
		if _, err := src.GetX509SVID(); !errors.Is(err, workload.ErrNoSVID) {
			return fmt.Errorf("err = %v", err)
		}
		return nil
	})
}
