package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// TestVerifyWorkloadRefusals: enforcement points authenticate with any
// workload SVID of this CA; certificates of another CA, revoked or
// quarantined ones and expired ones are refused.
func TestVerifyWorkloadRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		sign := func(path string) *Issued {
			t.Helper()
			iss, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id(path), 0, env.joinAgent("node-"+path[len(path)-1:]).ID)
			if err != nil {
				t.Fatal(err)
			}
			return iss
		}
		good := sign("/ns/bank/sa/a")
		revoked := sign("/ns/bank/sa/b")
		quarantined := sign("/ns/bank/sa/c")
		if err := env.a.Revoke(ctx, revoked.Serial, "key leaked"); err != nil {
			t.Fatal(err)
		}
		if err := env.a.Quarantine(ctx, quarantined.ID, "compromised"); err != nil {
			t.Fatal(err)
		}
		other := newCAEnv(t, storetest.Open(t, db.Driver()))
		foreign, err := other.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/bank/sa/a"), 0, other.joinAgent("node-x").ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name  string
			chain []*x509.Certificate
			want  error
		}{
			{"no certificate", nil, ErrInvalid},
			{"same ID from another CA", foreign.Certificates, ErrInvalid},
			{"revoked serial", revoked.Certificates, ErrDenied},
			{"quarantined ID", quarantined.Certificates, ErrDenied},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if id, err := env.a.VerifyWorkload(tc.chain); !errors.Is(err, tc.want) {
					t.Fatalf("VerifyWorkload = %v, %v; want %v", id, err, tc.want)
				}
			})
		}
		if id, err := env.a.VerifyWorkload(good.Certificates); err != nil || id != good.ID {
			t.Fatalf("good workload: %v, %v", id, err)
		}
		env.clock.Advance(time.Hour + time.Minute)
		if _, err := env.a.VerifyWorkload(good.Certificates); !errors.Is(err, ErrInvalid) {
			t.Fatalf("expired SVID: %v; want ErrInvalid", err)
		}
	})
}
