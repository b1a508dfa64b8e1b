package ca

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestDenyList(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		iss, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, spiffeid.ID{})
		if err != nil {
			t.Fatal(err)
		}
		changed := env.a.DenyChanged()
		if env.a.IsDenied(iss.ID, iss.Serial) {
			t.Fatal("denied before any revocation")
		}
		// Upper case and leading zeros name the same serial.
		if err := env.a.Revoke(ctx, "00"+strings.ToUpper(iss.Serial), "key leaked"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-time.After(time.Second):
			t.Fatal("DenyChanged not closed by a revocation")
		}
		if !env.a.IsDenied(spiffeid.ID{}, iss.Serial) || env.a.IsDenied(iss.ID, "") {
			t.Fatal("the serial, and only the serial, should be denied")
		}
		if err := env.a.Revoke(ctx, iss.Serial, "again"); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
		q := env.id("/ns/a/sa/quarantined")
		if err := env.a.Quarantine(ctx, q, "suspicious"); err != nil {
			t.Fatal(err)
		}
		if !env.a.IsDenied(q, "") {
			t.Fatal("quarantined ID not denied")
		}
		list, err := env.a.DenyList(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Kind != DenyKindSerial || list[0].Value != iss.Serial || list[0].Reason != "key leaked" ||
			list[1].Kind != DenyKindSPIFFEID || list[1].Value != q.String() || list[1].Seq <= list[0].Seq {
			t.Fatalf("deny list %+v", list)
		}
		if after, err := env.a.DenyList(ctx, list[0].Seq); err != nil || len(after) != 1 || after[0].Seq != list[1].Seq {
			t.Fatalf("DenyList(after %d) = %+v, %v", list[0].Seq, after, err)
		}

		tests := []struct {
			name string
			run  func() error
			want error
		}{
			{"unknown serial", func() error { return env.a.Revoke(ctx, "abcdef", "x") }, ErrNotFound},
			{"non-hex serial", func() error { return env.a.Revoke(ctx, "xyz", "x") }, ErrInvalid},
			{"zero serial", func() error { return env.a.Revoke(ctx, "0", "x") }, ErrInvalid},
			{"huge serial", func() error { return env.a.Revoke(ctx, strings.Repeat("f", 100), "x") }, ErrInvalid},
			{"control character in reason", func() error { return env.a.Revoke(ctx, iss.Serial, "a\nb") }, ErrInvalid},
			{"long reason", func() error { return env.a.Quarantine(ctx, q, strings.Repeat("r", 300)) }, ErrInvalid},
			{"foreign trust domain", func() error {
				return env.a.Quarantine(ctx, spiffeid.RequireFromString("spiffe://other.test/x"), "x")
			}, ErrInvalid},
			{"zero ID", func() error { return env.a.Quarantine(ctx, spiffeid.ID{}, "x") }, ErrInvalid},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.run(); !errors.Is(err, tc.want) {
					t.Fatalf("err = %v; want %v", err, tc.want)
				}
			})
		}
		if list2, _ := env.a.DenyList(ctx, 0); len(list2) != 2 {
			t.Fatalf("refused requests changed the deny list: %+v", list2)
		}
		if n := env.countEvents(classEntityManagement, actDisable, audit.StatusFailure) +
			env.countEvents(classEntityManagement, actSuspend, audit.StatusFailure); n != len(tests) {
			t.Fatalf("%d refusals audited; want %d", n, len(tests))
		}
		if n := env.countEvents(classEntityManagement, actDisable, audit.StatusSuccess); n != 2 {
			t.Fatalf("%d revocations audited; want 2", n)
		}
	})
}
