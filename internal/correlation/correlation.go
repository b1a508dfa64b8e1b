// Package correlation carries one request's identity across every hop of the
// data plane: the X-Request-ID that audit events record as their
// correlation_uid, and the W3C Trace Context (traceparent) that tracing
// systems follow. Each hop keeps a well-formed incoming value, replaces a
// malformed one, and starts its own span under the caller's.
package correlation

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// Header names.
const (
	// HeaderRequestID carries the request's correlation id.
	HeaderRequestID = "X-Request-ID"
	// HeaderTraceparent carries the W3C Trace Context.
	HeaderTraceparent = "traceparent"
)

// MaxRequestIDLen bounds an accepted X-Request-ID.
const MaxRequestIDLen = 128

// TraceContext is one hop's position in a W3C trace.
type TraceContext struct {
	// TraceID is the 32 lowercase hex digits of the trace.
	TraceID string
	// SpanID is this hop's 16 hex digit span id.
	SpanID string
	// ParentSpanID is the caller's span id, or "" when this hop started
	// the trace.
	ParentSpanID string
	// Sampled is the trace's sampled flag.
	Sampled bool
}

// Traceparent returns tc as a version-00 traceparent header value.
func (tc TraceContext) Traceparent() string {
	flags := "00"
	if tc.Sampled {
		flags = "01"
	}
	return "00-" + tc.TraceID + "-" + tc.SpanID + "-" + flags
}

// Ensure gives the request whose headers are h its correlation: it keeps a
// well-formed X-Request-ID or sets a new random one, and continues the trace
// of a well-formed traceparent (or starts a new sampled one) with a new span
// of this hop, which it writes back into h for the next hop.
func Ensure(h http.Header) (requestID string, tc TraceContext) {
	requestID = h.Get(HeaderRequestID)
	if !ValidRequestID(requestID) {
		requestID = randomHex(16)
	}
	h.Set(HeaderRequestID, requestID)
	if traceID, parent, sampled, ok := ParseTraceparent(h.Get(HeaderTraceparent)); ok {
		tc = TraceContext{TraceID: traceID, ParentSpanID: parent, Sampled: sampled}
	} else {
		tc = TraceContext{TraceID: randomHex(16), Sampled: true}
	}
	tc.SpanID = randomHex(8)
	h.Set(HeaderTraceparent, tc.Traceparent())
	h.Del("tracestate") // vendor state of an untrusted caller is not carried inward
	return requestID, tc
}

// ValidRequestID reports whether id is 1 to MaxRequestIDLen characters of
// [A-Za-z0-9._:-].
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// ParseTraceparent parses a W3C traceparent header value. It accepts
// version 00 exactly, and later versions by their first four fields, as
// the specification asks; all-zero trace or parent ids are invalid.
func ParseTraceparent(v string) (traceID, parentID string, sampled, ok bool) {
	if len(v) < 55 {
		return "", "", false, false
	}
	version := v[:2]
	if !isLowerHex(version) || version == "ff" || (version == "00" && len(v) != 55) || (len(v) > 55 && v[55] != '-') {
		return "", "", false, false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return "", "", false, false
	}
	traceID, parentID, flags := v[3:35], v[36:52], v[53:55]
	if !isLowerHex(traceID) || !isLowerHex(parentID) || !isLowerHex(flags) ||
		strings.Trim(traceID, "0") == "" || strings.Trim(parentID, "0") == "" {
		return "", "", false, false
	}
	b, _ := hex.DecodeString(flags)
	return traceID, parentID, b[0]&1 == 1, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// randomHex returns n random bytes in hex; crypto/rand never fails on the
// platforms Go supports (it panics inside the runtime if it would).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
