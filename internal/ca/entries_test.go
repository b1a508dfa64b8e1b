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

func TestParseSelector(t *testing.T) {
	hash := strings.Repeat("Ab", 32)
	tests := []struct {
		in   string
		want Selector
		ok   bool
	}{
		{"unix:uid:1001", Selector{"unix", "uid:1001"}, true},
		{"unix:uid:0001", Selector{"unix", "uid:1"}, true},
		{"unix:gid:100", Selector{"unix", "gid:100"}, true},
		{"unix:path:/usr/bin/payments", Selector{"unix", "path:/usr/bin/payments"}, true},
		{"unix:sha256:" + hash, Selector{"unix", "sha256:" + strings.ToLower(hash)}, true},
		{"unix:uid:-1", Selector{}, false},
		{"unix:uid:4294967296", Selector{}, false},
		{"unix:uid:", Selector{}, false},
		{"unix:uid", Selector{}, false},
		{"unix:path:relative/bin", Selector{}, false},
		{"unix:path:/usr/../bin/sh", Selector{}, false},
		{"unix:path:/usr/bin/", Selector{}, false},
		{"unix:sha256:abcd", Selector{}, false},
		{"unix:pid:42", Selector{}, false},
		{"k8s:ns:default", Selector{}, false},
		{"", Selector{}, false},
		{"unix", Selector{}, false},
		{"unix:path:/" + strings.Repeat("a", 5000), Selector{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSelector(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseSelector(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestEntries(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		node1, node2 := env.id("/agent/node-1"), env.id("/agent/node-2")
		sel := func(s ...string) []Selector {
			var out []Selector
			for _, x := range s {
				p, err := ParseSelector(x)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, p)
			}
			return out
		}
		anyAgent := &Entry{SPIFFEID: env.id("/ns/pay/sa/api"), Selectors: sel("unix:uid:1001", "unix:path:/usr/bin/pay", "unix:uid:1001")}
		onNode1 := &Entry{SPIFFEID: env.id("/ns/pay/sa/db"), ParentID: node1, Selectors: sel("unix:gid:100"), TTL: 10 * time.Minute}
		for _, e := range []*Entry{anyAgent, onNode1} {
			if err := env.a.CreateEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(e.ID, "ent_") || e.CreatedAt.IsZero() {
				t.Fatalf("entry ID %q, created %v", e.ID, e.CreatedAt)
			}
		}
		if len(anyAgent.Selectors) != 2 {
			t.Fatalf("duplicate selectors kept: %v", anyAgent.Selectors)
		}
		all, err := env.a.ListEntries(ctx)
		if err != nil || len(all) != 2 {
			t.Fatalf("ListEntries = %d, %v", len(all), err)
		}
		got, err := env.a.Entry(ctx, onNode1.ID)
		if err != nil || got.SPIFFEID != onNode1.SPIFFEID || got.ParentID != node1 || got.TTL != 10*time.Minute || len(got.Selectors) != 1 {
			t.Fatalf("Entry = %+v, %v", got, err)
		}
		for agent, want := range map[spiffeid.ID]int{node1: 2, node2: 1} {
			es, err := env.a.EntriesForAgent(ctx, agent)
			if err != nil || len(es) != want {
				t.Fatalf("EntriesForAgent(%s) = %d, %v; want %d", agent, len(es), err, want)
			}
		}

		bad := []struct {
			name string
			e    *Entry
		}{
			{"no selectors", &Entry{SPIFFEID: env.id("/ns/a/sa/b")}},
			{"zero ID", &Entry{Selectors: sel("unix:uid:1")}},
			{"another trust domain", &Entry{SPIFFEID: spiffeid.RequireFromString("spiffe://other.test/ns/a/sa/b"), Selectors: sel("unix:uid:1")}},
			{"agent identity", &Entry{SPIFFEID: env.id("/agent/node-9"), Selectors: sel("unix:uid:1")}},
			{"under the agent path", &Entry{SPIFFEID: env.id("/agent/node-9/x"), Selectors: sel("unix:uid:1")}},
			{"parent not an agent", &Entry{SPIFFEID: env.id("/ns/a/sa/b"), ParentID: env.id("/ns/x"), Selectors: sel("unix:uid:1")}},
			{"parent in another trust domain", &Entry{SPIFFEID: env.id("/ns/a/sa/b"),
				ParentID: spiffeid.RequireFromString("spiffe://other.test/agent/n"), Selectors: sel("unix:uid:1")}},
			{"unknown selector", &Entry{SPIFFEID: env.id("/ns/a/sa/b"), Selectors: []Selector{{"unix", "pid:1"}}}},
			{"negative TTL", &Entry{SPIFFEID: env.id("/ns/a/sa/b"), Selectors: sel("unix:uid:1"), TTL: -time.Second}},
			{"TTL too long", &Entry{SPIFFEID: env.id("/ns/a/sa/b"), Selectors: sel("unix:uid:1"), TTL: 48 * time.Hour}},
			{"TTL too short", &Entry{SPIFFEID: env.id("/ns/a/sa/b"), Selectors: sel("unix:uid:1"), TTL: time.Second}},
		}
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				if err := env.a.CreateEntry(ctx, tc.e); !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v; want ErrInvalid", err)
				}
			})
		}
		if all, _ := env.a.ListEntries(ctx); len(all) != 2 {
			t.Fatalf("refused entries were stored: %d entries", len(all))
		}

		if err := env.a.DeleteEntry(ctx, anyAgent.ID); err != nil {
			t.Fatal(err)
		}
		if err := env.a.DeleteEntry(ctx, anyAgent.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting twice: %v; want ErrNotFound", err)
		}
		if _, err := env.a.Entry(ctx, anyAgent.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted entry: %v; want ErrNotFound", err)
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusFailure); n != len(bad) {
			t.Fatalf("%d refused entries audited; want %d", n, len(bad))
		}
		if n := env.countEvents(classEntityManagement, actDelete, audit.StatusSuccess); n != 1 {
			t.Fatalf("%d deletions audited; want 1", n)
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"unix:uid:1001", "unix:gid:0", "unix:path:/usr/bin/x", "unix:sha256:" + strings.Repeat("0", 64), "unix::", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// The canonical form parses to itself.
		again, err := ParseSelector(sel.String())
		if err != nil || again != sel {
			t.Fatalf("ParseSelector(%q) = %+v, %v; want %+v", sel.String(), again, err, sel)
		}
	})
}

func FuzzParseSPIFFEID(f *testing.F) {
	td := spiffeid.RequireTrustDomainFromString("example.test")
	for _, s := range []string{"spiffe://example.test/ns/a/sa/b", "spiffe://example.test", "spiffe://other.test/x",
		"spiffe://example.test/a/../b", "SPIFFE://example.test/x", "spiffe://example.test/%41", "spiffe://user@example.test/x",
		"spiffe://example.test:8080/x", "spiffe://example.test/x?q=1", "spiffe://example.test/x#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSPIFFEID(td, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !id.MemberOf(td) || id.Path() == "" || id.String() != s {
			t.Fatalf("ParseSPIFFEID(%q) = %q (member %v)", s, id, id.MemberOf(td))
		}
		if strings.ContainsAny(id.Path(), "?#%@:") || strings.Contains(id.Path()+"/", "/../") || strings.Contains(id.Path()+"/", "/./") {
			t.Fatalf("accepted a path with forbidden parts: %q", id.Path())
		}
	})
}
