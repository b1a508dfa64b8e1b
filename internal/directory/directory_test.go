package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

const testTD = "bulwark.test"

func payments() Service {
	return Service{ID: "spiffe://bulwark.test/ns/bank/sa/payments", Name: "payments", Endpoints: []string{"127.0.0.1:9001"},
		Owner: "team-payments", DataClasses: []string{"confidential"}, Region: "eu"}
}

// serviceEvents returns the audit events about services.
func serviceEvents(t *testing.T, l *audit.Log) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, e := range audittest.Events(t, l) {
		if len(e.Resources) == 1 && e.Resources[0].Type == ResourceType {
			out = append(out, e)
		}
	}
	return out
}

func newTestDirectory(t *testing.T, db *store.DB, clock *clocktest.Clock) (*Directory, *audit.Log) {
	t.Helper()
	l := audittest.Start(t, db)
	d, err := New(Config{TrustDomain: testTD}, Deps{DB: db, Audit: l, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return d, l
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	l := audittest.Start(t, db)
	for _, tc := range []struct {
		name string
		cfg  Config
		deps Deps
	}{
		{"no trust domain", Config{}, Deps{DB: db, Audit: l}},
		{"uppercase trust domain", Config{TrustDomain: "Bulwark.Test"}, Deps{DB: db, Audit: l}},
		{"trust domain with slash", Config{TrustDomain: "a/b"}, Deps{DB: db, Audit: l}},
		{"no store", Config{TrustDomain: testTD}, Deps{Audit: l}},
		{"no audit", Config{TrustDomain: testTD}, Deps{DB: db}},
	} {
		if _, err := New(tc.cfg, tc.deps); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
}

func TestCRUD(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		clock := &clocktest.Clock{}
		d, l := newTestDirectory(t, db, clock)

		if list, err := d.List(ctx); err != nil || len(list) != 0 {
			t.Fatalf("empty List = %v, %v", list, err)
		}
		p, err := d.Put(ctx, payments(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if p.CreatedAt.IsZero() || !p.CreatedAt.Equal(p.UpdatedAt) {
			t.Fatalf("created service times %v / %v", p.CreatedAt, p.UpdatedAt)
		}
		got, err := d.Get(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(p) {
			t.Fatalf("Get = %+v, want %+v", got, p)
		}
		byName, err := d.ByName(ctx, "payments")
		if err != nil || byName.ID != p.ID {
			t.Fatalf("ByName = %+v, %v", byName, err)
		}

		clock.Advance(time.Hour)
		upd := payments()
		upd.Endpoints = []string{"10.0.0.1:9001", "payments.bank.internal:9001"}
		upd.DataClasses = nil
		upd.Region = ""
		u, err := d.Put(ctx, upd, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if !u.CreatedAt.Equal(p.CreatedAt) || u.UpdatedAt.Sub(p.UpdatedAt) < time.Hour {
			t.Fatalf("updated times %v / %v, created %v", u.CreatedAt, u.UpdatedAt, p.CreatedAt)
		}
		got, _ = d.Get(ctx, p.ID)
		if len(got.Endpoints) != 2 || got.DataClasses == nil || len(got.DataClasses) != 0 || got.Region != "" {
			t.Fatalf("after update: %+v", got)
		}

		ledger := Service{ID: "spiffe://bulwark.test/ledger", Name: "ledger", Endpoints: []string{"[::1]:9002"}, Owner: "team-ledger",
			DataClasses: []string{"restricted", "public"}}
		if _, err := d.Put(ctx, ledger, "alice"); err != nil {
			t.Fatal(err)
		}
		list, err := d.List(ctx)
		if err != nil || len(list) != 2 || list[0].Name != "ledger" || list[1].Name != "payments" {
			t.Fatalf("List = %+v, %v", list, err)
		}

		// Renaming to a free name works; the old name is free again.
		ren := upd
		ren.Name = "payments-v2"
		if _, err := d.Put(ctx, ren, "bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ByName(ctx, "payments"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old name: %v", err)
		}

		if err := d.Delete(ctx, p.ID, "carol"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Get(ctx, p.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after delete: %v", err)
		}
		if err := d.Delete(ctx, p.ID, "carol"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}

		evs := serviceEvents(t, l)
		want := []struct {
			act   int
			actor string
			uid   string
		}{
			{actCreate, "alice", p.ID}, {actUpdate, "bob", p.ID}, {actCreate, "alice", ledger.ID},
			{actUpdate, "bob", p.ID}, {actDelete, "carol", p.ID},
		}
		if len(evs) != len(want) {
			t.Fatalf("%d service events, want %d: %+v", len(evs), len(want), evs)
		}
		for i, w := range want {
			e := evs[i]
			if e.ClassUID != classEntityMgmt || e.ActivityID != w.act || e.StatusID != audit.StatusSuccess ||
				e.Actor == nil || e.Actor.User == nil || e.Actor.User.UID != w.actor || e.Resources[0].UID != w.uid {
				t.Errorf("event %d = %+v (actor %+v), want activity %d by %s on %s", i, e, e.Actor, w.act, w.actor, w.uid)
			}
		}
		if ch, _ := evs[3].Unmapped["changed"].([]any); len(ch) != 1 || ch[0] != "name" {
			t.Errorf("rename event changed = %v", evs[3].Unmapped["changed"])
		}
	})
}

func TestValidation(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("127.0.0.1:%d", 9000+i)
		}
		return out
	}
	with := func(f func(*Service)) Service { s := payments(); f(&s); return s }
	cases := []struct {
		name  string
		svc   Service
		field string
		kind  error
	}{
		{"empty id", with(func(s *Service) { s.ID = "" }), "id", ErrInvalid},
		{"not spiffe", with(func(s *Service) { s.ID = "https://bulwark.test/payments" }), "id", ErrInvalid},
		{"uppercase scheme", with(func(s *Service) { s.ID = "SPIFFE://bulwark.test/payments" }), "id", ErrInvalid},
		{"no path", with(func(s *Service) { s.ID = "spiffe://bulwark.test" }), "id", ErrInvalid},
		{"root path", with(func(s *Service) { s.ID = "spiffe://bulwark.test/" }), "id", ErrInvalid},
		{"other trust domain", with(func(s *Service) { s.ID = "spiffe://evil.test/payments" }), "id", ErrInvalid},
		{"trust domain suffix", with(func(s *Service) { s.ID = "spiffe://bulwark.test.evil/payments" }), "id", ErrInvalid},
		{"userinfo", with(func(s *Service) { s.ID = "spiffe://x@bulwark.test/payments" }), "id", ErrInvalid},
		{"port", with(func(s *Service) { s.ID = "spiffe://bulwark.test:443/payments" }), "id", ErrInvalid},
		{"dot-dot", with(func(s *Service) { s.ID = "spiffe://bulwark.test/a/../b" }), "id", ErrInvalid},
		{"empty segment", with(func(s *Service) { s.ID = "spiffe://bulwark.test/a//b" }), "id", ErrInvalid},
		{"trailing slash", with(func(s *Service) { s.ID = "spiffe://bulwark.test/a/" }), "id", ErrInvalid},
		{"query", with(func(s *Service) { s.ID = "spiffe://bulwark.test/a?b=c" }), "id", ErrInvalid},
		{"percent", with(func(s *Service) { s.ID = "spiffe://bulwark.test/a%2Fb" }), "id", ErrInvalid},
		{"oversized id", with(func(s *Service) { s.ID = "spiffe://bulwark.test/" + long(MaxIDLen) }), "id", ErrInvalid},
		{"empty name", with(func(s *Service) { s.Name = "" }), "name", ErrInvalid},
		{"uppercase name", with(func(s *Service) { s.Name = "Payments" }), "name", ErrInvalid},
		{"name with dot", with(func(s *Service) { s.Name = "pay.ments" }), "name", ErrInvalid},
		{"name leading dash", with(func(s *Service) { s.Name = "-payments" }), "name", ErrInvalid},
		{"oversized name", with(func(s *Service) { s.Name = long(64) }), "name", ErrInvalid},
		{"no endpoints", with(func(s *Service) { s.Endpoints = nil }), "endpoints", ErrInvalid},
		{"too many endpoints", with(func(s *Service) { s.Endpoints = many(MaxEndpoints + 1) }), "endpoints", ErrInvalid},
		{"no port", with(func(s *Service) { s.Endpoints = []string{"127.0.0.1"} }), "endpoints[0]", ErrInvalid},
		{"port zero", with(func(s *Service) { s.Endpoints = []string{"127.0.0.1:0"} }), "endpoints[0]", ErrInvalid},
		{"port too big", with(func(s *Service) { s.Endpoints = []string{"127.0.0.1:65536"} }), "endpoints[0]", ErrInvalid},
		{"port leading zero", with(func(s *Service) { s.Endpoints = []string{"127.0.0.1:09001"} }), "endpoints[0]", ErrInvalid},
		{"named port", with(func(s *Service) { s.Endpoints = []string{"127.0.0.1:http"} }), "endpoints[0]", ErrInvalid},
		{"empty host", with(func(s *Service) { s.Endpoints = []string{":9001"} }), "endpoints[0]", ErrInvalid},
		{"unspecified host", with(func(s *Service) { s.Endpoints = []string{"0.0.0.0:9001"} }), "endpoints[0]", ErrInvalid},
		{"url not host:port", with(func(s *Service) { s.Endpoints = []string{"http://a:80"} }), "endpoints[0]", ErrInvalid},
		{"bad host", with(func(s *Service) { s.Endpoints = []string{"a_b:80"} }), "endpoints[0]", ErrInvalid},
		{"zone", with(func(s *Service) { s.Endpoints = []string{"[fe80::1%eth0]:80"} }), "endpoints[0]", ErrInvalid},
		{"duplicate endpoint", with(func(s *Service) { s.Endpoints = []string{"a:1", "a:1"} }), "endpoints[1]", ErrInvalid},
		{"oversized endpoint", with(func(s *Service) { s.Endpoints = []string{long(300) + ":1"} }), "endpoints[0]", ErrInvalid},
		{"no owner", with(func(s *Service) { s.Owner = "" }), "owner", ErrInvalid},
		{"owner with space", with(func(s *Service) { s.Owner = "team payments" }), "owner", ErrInvalid},
		{"oversized owner", with(func(s *Service) { s.Owner = long(MaxOwnerLen + 1) }), "owner", ErrInvalid},
		{"bad data class", with(func(s *Service) { s.DataClasses = []string{"Secret!"} }), "data_classes[0]", ErrInvalid},
		{"empty data class", with(func(s *Service) { s.DataClasses = []string{"public", ""} }), "data_classes[1]", ErrInvalid},
		{"duplicate data class", with(func(s *Service) { s.DataClasses = []string{"public", "public"} }), "data_classes[1]", ErrInvalid},
		{"oversized data class", with(func(s *Service) { s.DataClasses = []string{long(MaxDataClassLen + 1)} }), "data_classes[0]", ErrInvalid},
		{"too many data classes", with(func(s *Service) {
			s.DataClasses = nil
			for i := range MaxDataClasses + 1 {
				s.DataClasses = append(s.DataClasses, fmt.Sprintf("c%d", i))
			}
		}), "data_classes", ErrInvalid},
		{"bad region", with(func(s *Service) { s.Region = "EU West" }), "region", ErrInvalid},
		{"oversized region", with(func(s *Service) { s.Region = long(MaxRegionLen + 1) }), "region", ErrInvalid},
		{"duplicate name", with(func(s *Service) { s.ID = "spiffe://bulwark.test/other"; s.Name = "ledger" }), "name", ErrConflict},
	}
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d, l := newTestDirectory(t, db, &clocktest.Clock{})
		if _, err := d.Put(ctx, Service{ID: "spiffe://bulwark.test/ledger", Name: "ledger", Endpoints: []string{"127.0.0.1:9002"}, Owner: "o"}, "a"); err != nil {
			t.Fatal(err)
		}
		before := len(serviceEvents(t, l))
		for _, tc := range cases {
			_, err := d.Put(ctx, tc.svc, "attacker")
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, tc.kind) {
				t.Errorf("%s: Put error = %v, want a %v on field %q", tc.name, err, tc.kind, tc.field)
			}
		}
		if list, _ := d.List(ctx); len(list) != 1 {
			t.Errorf("refused puts stored services: %+v", list)
		}
		if n := len(serviceEvents(t, l)); n != before {
			t.Errorf("refusals were audited: %d events, want %d", n, before)
		}
	})
}

// failingAuditor refuses every event.
type failingAuditor struct{}

func (failingAuditor) Append(context.Context, []*audit.Event) (audit.AppendResult, error) {
	return audit.AppendResult{}, errors.New("audit log down")
}

func TestAuditFailureIsAnError(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	d, err := New(Config{TrustDomain: testTD}, Deps{DB: db, Audit: failingAuditor{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.Put(ctx, payments(), "a"); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("Put with audit down: %v", err)
	}
	if err := d.Delete(ctx, payments().ID, "a"); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("Delete with audit down: %v", err)
	}
}

func TestDecodeService(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"valid", `{"id":"spiffe://bulwark.test/a","name":"a","endpoints":["a:1"],"owner":"o","data_classes":[]}`, true},
		{"times ignored later", `{"id":"x","created_at":"2020-01-01T00:00:00Z"}`, true},
		{"unknown field", `{"id":"x","admin":true}`, false},
		{"trailing data", `{"id":"x"} {}`, false},
		{"not an object", `[]`, false},
		{"wrong type", `{"endpoints":"a:1"}`, false},
		{"empty", ``, false},
		{"truncated", `{"id":`, false},
		{"oversized", `{"owner":"` + strings.Repeat("a", MaxServiceBytes) + `"}`, false},
	} {
		_, err := DecodeService([]byte(tc.in))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: DecodeService error = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestConcurrentPutsOneName races puts of one name under different IDs:
// exactly one wins, the others are conflicts.
func TestConcurrentPutsOneName(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d, l := newTestDirectory(t, db, &clocktest.Clock{})
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			go func() {
				s := payments()
				s.ID = fmt.Sprintf("spiffe://bulwark.test/replica/%d", i)
				_, err := d.Put(ctx, s, "racer")
				errs <- err
			}()
		}
		won := 0
		for range n {
			err := <-errs
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrConflict):
				t.Errorf("racing put: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d puts won the name, want 1", won)
		}
		if list, err := d.List(ctx); err != nil || len(list) != 1 {
			t.Fatalf("List = %+v, %v", list, err)
		}
		if evs := serviceEvents(t, l); len(evs) != 1 {
			t.Fatalf("%d events, want 1", len(evs))
		}
	})
}
