package policy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

func TestEntities(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := startRepo(t, db, repoOpts{})
		if _, err := r.Push(ctx, map[string]string{"p.cedar": adminsReadRoutes}, "", testAdmin); err != nil {
			t.Fatal(err)
		}
		if _, err := r.PutEntities(ctx, []byte(aliceAdmin), false, testAdmin); err != nil {
			t.Fatal(err)
		}
		before, _ := r.Entities(ctx, "")
		_, bundleBefore := r.Bundle()
		refused := []struct{ name, body, want string }{
			{"wrong attribute type", `[{"uid":{"type":"Bulwark::Route","id":"r"},"parents":[],"attrs":{"method":5,"path":"/"}}]`, "does not match the schema"},
			{"missing attribute", `[{"uid":{"type":"Bulwark::Route","id":"r"},"parents":[],"attrs":{"method":"GET"}}]`, "does not match the schema"},
			{"unknown type", `[{"uid":{"type":"Bulwark::Nope","id":"x"},"parents":[],"attrs":{}}]`, "not found in schema"},
			{"action entity", `[{"uid":{"type":"Bulwark::Action","id":"read"},"parents":[],"attrs":{}}]`, "action entities"},
			{"duplicate", `[{"uid":{"type":"Bulwark::Role","id":"x"},"parents":[],"attrs":{}},{"uid":{"type":"Bulwark::Role","id":"x"},"parents":[],"attrs":{}}]`, "same UID"},
			{"not an array", `{"uid":{"type":"Bulwark::Role","id":"x"}}`, "JSON array"},
			{"null", `null`, "not null"},
			{"malformed", `[{"uid":`, "JSON array"},
			{"missing parents", `[{"uid":{"type":"Bulwark::Role","id":"x"},"attrs":{}}]`, "parents"},
			{"trailing data", `[] []`, "after the entity array"},
			{"one good one bad", `[{"uid":{"type":"Bulwark::Role","id":"ok"},"parents":[],"attrs":{}},{"uid":{"type":"Bulwark::Nope","id":"x"},"parents":[],"attrs":{}}]`, "entity 1"},
		}
		for _, tt := range refused {
			for _, replace := range []bool{false, true} {
				_, err := r.PutEntities(ctx, []byte(tt.body), replace, testAdmin)
				var ee *EntitiesError
				if !errors.As(err, &ee) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s (replace %v): %v, want %q", tt.name, replace, err, tt.want)
				}
				if ev := r.lastEvent(t); ev.StatusID != audit.StatusFailure || ev.Resources[0].Type != "policy_entity" {
					t.Fatalf("%s: refusal event %+v", tt.name, ev)
				}
			}
		}
		after, _ := r.Entities(ctx, "")
		if _, v := r.Bundle(); string(after) != string(before) || v != bundleBefore || r.Snapshot().EntitiesVersion != 1 {
			t.Fatal("a refused entity change changed something")
		}

		// Upsert keeps the others; replace drops them.
		v, err := r.PutEntities(ctx, []byte(`[{"uid":{"type":"Bulwark::Route","id":"r1"},"parents":[],"attrs":{"method":"GET","path":"/a"}}]`), false, testAdmin)
		if err != nil || v != 2 {
			t.Fatalf("upsert: %d %v", v, err)
		}
		if users, _ := r.Entities(ctx, "User"); !strings.Contains(string(users), `"alice"`) || strings.Contains(string(users), "Route") {
			t.Fatalf("type filter: %s", users)
		}
		if ent, err := r.Entity(ctx, route); err != nil || !strings.Contains(string(ent), `"/a"`) {
			t.Fatalf("Entity: %s %v", ent, err)
		}
		if !r.decide(readRoute).Allowed {
			t.Fatal("upsert dropped alice")
		}
		v, err = r.PutEntities(ctx, []byte(`[{"uid":{"type":"Bulwark::User","id":"bob"},"parents":[{"type":"Bulwark::Role","id":"admin"}],"attrs":{}}]`), true, testAdmin)
		if err != nil || v != 3 {
			t.Fatalf("replace: %d %v", v, err)
		}
		if _, err := r.Entity(ctx, alice); !errors.Is(err, ErrNotFound) {
			t.Fatalf("alice after replace: %v", err)
		}
		if r.decide(readRoute).Allowed || !r.decide(authz.Request{Principal: bob, Action: ActionUID("read"), Resource: route}).Allowed {
			t.Fatal("replace did not take effect in the snapshot")
		}
		if ev := r.lastEvent(t); ev.ActivityID != 3 || ev.Resources[0].UID != "3" || ev.Unmapped["replace"] != true {
			t.Fatalf("replace event %+v", ev)
		}
		v, err = r.DeleteEntity(ctx, bob, testAdmin)
		if err != nil || v != 4 || r.Snapshot().EntitiesVersion != 4 {
			t.Fatalf("delete: %d %v", v, err)
		}
		if ev := r.lastEvent(t); ev.ActivityID != 4 || ev.Resources[0].Name != bob.String() {
			t.Fatalf("delete event %+v", ev)
		}
		if _, err := r.DeleteEntity(ctx, bob, testAdmin); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete again: %v", err)
		}
		if vb := r.verify(t); string(vb.Entities) != "[]" || vb.Manifest.EntitiesVersion != 4 {
			t.Fatalf("bundle entities %s", vb.Entities)
		}
	})
}

// FuzzDecodeEntities: any body given to PutEntities is either refused with
// an *EntitiesError or yields entities that re-validate; it never panics.
func FuzzDecodeEntities(f *testing.F) {
	for _, seed := range []string{aliceAdmin, `[]`, `null`, `[{"uid":{"type":"Bulwark::Route","id":"r"},"parents":[],"attrs":{"method":5}}]`,
		`[{"uid":{"__entity":{"type":"Bulwark::Role","id":"x"}},"parents":[],"attrs":{},"tags":{}}]`, `[{"uid":`} {
		f.Add([]byte(seed))
	}
	s, err := DefaultSchema()
	if err != nil {
		f.Fatal(err)
	}
	r := &Repository{schema: s}
	f.Fuzz(func(t *testing.T, body []byte) {
		ents, err := r.decodeEntities(body)
		if err != nil {
			var ee *EntitiesError
			if !errors.As(err, &ee) || len(ee.Problems) == 0 {
				t.Fatalf("error %v is not an *EntitiesError with problems", err)
			}
			return
		}
		var buf []byte
		buf = append(buf, '[')
		for i, e := range ents {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, e.data...)
		}
		buf = append(buf, ']')
		again, err := r.decodeEntities(buf)
		if err != nil || len(again) != len(ents) {
			t.Fatalf("stored form %s does not re-validate: %v", buf, err)
		}
	})
}
