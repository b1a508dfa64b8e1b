package correlation

import (
	"net/http"
	"strings"
	"testing"
)

func TestEnsure(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name           string
		reqID, tp      string
		keepID         bool
		keepTrace      bool
		wantParentSpan string
	}{
		{"nothing", "", "", false, false, ""},
		{"both valid", "abc-123", parent, true, true, "00f067aa0ba902b7"},
		{"request id with newline", "abc\n123", parent, false, true, "00f067aa0ba902b7"},
		{"request id too long", strings.Repeat("a", 129), "", false, false, ""},
		{"uppercase traceparent", "x", strings.ToUpper(parent), true, false, ""},
		{"zero trace id", "x", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", true, false, ""},
		{"zero parent", "x", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", true, false, ""},
		{"version ff", "x", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, false, ""},
		{"version 00 with suffix", "x", parent + "-x", true, false, ""},
		{"future version with suffix", "x", "01" + parent[2:] + "-what", true, true, "00f067aa0ba902b7"},
		{"garbage", "x", "hello", true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.reqID != "" {
				h.Set(HeaderRequestID, tc.reqID)
			}
			if tc.tp != "" {
				h.Set(HeaderTraceparent, tc.tp)
			}
			h.Set("tracestate", "vendor=x")
			id, trace := Ensure(h)
			if tc.keepID != (id == tc.reqID) || !ValidRequestID(id) || h.Get(HeaderRequestID) != id {
				t.Errorf("request id %q from %q (keep %v)", id, tc.reqID, tc.keepID)
			}
			if tc.keepTrace != (trace.TraceID == "4bf92f3577b34da6a3ce929d0e0e4736") {
				t.Errorf("trace %q from %q (keep %v)", trace.TraceID, tc.tp, tc.keepTrace)
			}
			if trace.ParentSpanID != tc.wantParentSpan || trace.SpanID == "" || trace.SpanID == trace.ParentSpanID {
				t.Errorf("spans %+v", trace)
			}
			got := h.Get(HeaderTraceparent)
			if traceID, span, _, ok := ParseTraceparent(got); !ok || traceID != trace.TraceID || span != trace.SpanID {
				t.Errorf("written traceparent %q for %+v", got, trace)
			}
			if h.Get("tracestate") != "" {
				t.Error("tracestate of the caller kept")
			}
		})
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
	f.Fuzz(func(t *testing.T, v string) {
		traceID, parent, sampled, ok := ParseTraceparent(v)
		if !ok {
			return
		}
		tc := TraceContext{TraceID: traceID, SpanID: parent, Sampled: sampled}
		t2, p2, s2, ok2 := ParseTraceparent(tc.Traceparent())
		if !ok2 || t2 != traceID || p2 != parent || s2 != sampled {
			t.Fatalf("round trip of %q", v)
		}
	})
}
