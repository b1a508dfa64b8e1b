package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// FuzzDecodeEvaluation checks that the AuthZEN request decoder never
// panics, and either refuses the input with a 400 or yields a well-formed
// Cedar request that the evaluator can decide.
func FuzzDecodeEvaluation(f *testing.F) {
	for _, seed := range []string{
		`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`,
		`{"subject":{"type":"user","id":"alice","properties":{"roles":["admin"]}},"action":{"name":"transfer"},` +
			`"resource":{"type":"payment","id":"p","properties":{"account":{"__entity":{"type":"Bulwark::Account","id":"acc-eu-1"}},"amount":5}},` +
			`"context":{"mfa":true,"riskScore":5,"time":{"epoch":1,"hour":10},"ip":{"__extn":{"fn":"ip","arg":"10.0.0.1"}}}}`,
		`{"subject":{"type":"Bulwark::Service","id":"spiffe://x/y"},"action":{"name":"call"},"resource":{"type":"service","id":"z"},"context":null}`,
		`{"subject":{},"action":{},"resource":{}}`,
		`{"subject":{"type":"","id":""}}`,
		`{"context":{"a":1.5}}`,
		`{"context":{"__entity":{"type":"A","id":"b"}}}`,
		`[]`, `null`, `{`, `"x"`, ``,
		`{"subject":{"type":"ü","id":"\ud800"},"action":{"name":"\u0000"},"resource":{"type":"a::","id":"b"}}`,
	} {
		f.Add([]byte(seed))
	}
	ev := bankSource(f).snap.Evaluator
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := decodeEvaluation(body, now)
		if err != nil {
			var apiErr *httpapi.Error
			if !errors.As(err, &apiErr) || apiErr.Status/100 != 4 {
				t.Fatalf("decode error %v is not a 4xx API error", err)
			}
			return
		}
		req := in.request()
		if req.Principal.Type == "" || req.Principal.ID == "" || req.Resource.Type == "" || req.Resource.ID == "" {
			t.Fatalf("incomplete principal or resource: %v %v", req.Principal, req.Resource)
		}
		if req.Action.Type != "Bulwark::Action" || req.Action.ID == "" {
			t.Fatalf("action %v", req.Action)
		}
		for _, k := range []cedar.String{rcTime, rcZone, rcRegion, rcMFA, rcRiskScore, rcTokenScopes} {
			if _, ok := req.Context.Get(k); !ok {
				t.Fatalf("context lacks %q: %v", k, req.Context)
			}
		}
		if len(req.Principal.ID) > maxEntityIDBytes || len(req.Resource.ID) > maxEntityIDBytes || len(req.Action.ID) > maxEntityIDBytes {
			t.Fatal("identifier over the limit accepted")
		}
		if req.Entities != nil {
			if _, ok := req.Entities.Get(req.Principal); ok && req.Principal != req.Resource {
				t.Fatal("the request defines the principal's entity: subject properties must be ignored")
			}
		}
		d := ev.Decide(req)
		for _, e := range d.Errors {
			if strings.Contains(e, "internal error") {
				t.Fatalf("evaluator failed: %v", d.Errors)
			}
		}
	})
}

// FuzzCedarValueDecoder checks the request decoder's Cedar values against
// cedar-go's own JSON decoding: whatever the fast decoder accepts, cedar-go
// accepts too, as the same value.
func FuzzCedarValueDecoder(f *testing.F) {
	for _, seed := range []string{
		`{"a":1,"b":"x","c":true,"d":[1,2,2],"e":{"f":-9223372036854775808}}`,
		`{"__entity":{"type":"Bulwark::User","id":"alice"}}`,
		`{"x":{"__extn":{"fn":"ip","arg":"10.0.0.1"}},"y":{"__entity":{"type":"A","id":"b"},"z":1}}`,
		`{"a":1.5}`, `{"a":null}`, `[1,"a"]`, `9223372036854775808`, `"s"`, `{"a":1,"a":2}`, `{"__extn":{"fn":"decimal","arg":"1.5"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		dec := jsontext.NewDecoder(bytes.NewReader(raw))
		got, err := readCedarValue(dec, "v")
		if err != nil || azEnd(dec) != nil {
			return
		}
		var want cedar.Value
		if err := types.UnmarshalJSON(raw, &want); err != nil {
			t.Fatalf("the request decoder accepts %q, cedar-go refuses it: %v", raw, err)
		}
		if !got.Equal(want) {
			t.Fatalf("%q: request decoder %v, cedar-go %v", raw, got, want)
		}
	})
}
