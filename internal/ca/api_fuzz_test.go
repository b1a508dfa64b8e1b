package ca_test

import (
	"encoding/json"
	"testing"

	"github.com/bulwarksec/bulwark/internal/ca"
)

// FuzzEntryFromJSON: an agent decodes registration entries from the
// server's answers; no answer makes it panic, and an accepted entry has
// valid SPIFFE IDs.
func FuzzEntryFromJSON(f *testing.F) {
	f.Add([]byte(`{"id":"ent_1","spiffe_id":"spiffe://example.test/ns/a/sa/b","parent_id":"spiffe://example.test/agent/n","selectors":[{"type":"unix","value":"uid:1"}],"ttl_seconds":60}`))
	f.Add([]byte(`{"id":"ent_2","spiffe_id":"spiffe://example.test/a","parent_id":"","selectors":[],"ttl_seconds":-1}`))
	f.Add([]byte(`{"spiffe_id":"spiffe://EXAMPLE.test/../a","parent_id":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var j ca.EntryJSON
		if json.Unmarshal(data, &j) != nil {
			return
		}
		e, err := ca.EntryFromJSON(j)
		if err != nil {
			return
		}
		if e.SPIFFEID.IsZero() || e.SPIFFEID.String() != j.SPIFFEID {
			t.Fatalf("accepted entry with SPIFFE ID %q from %q", e.SPIFFEID, j.SPIFFEID)
		}
	})
}
