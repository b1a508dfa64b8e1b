package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Event is one audit record, shaped after the Open Cybersecurity Schema
// Framework (OCSF): a class and an activity, when it happened, who did it
// from where, to what, with which outcome and why, and how to correlate it.
// Field names follow OCSF so that SIEMs map them without translation.
type Event struct {
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	// Time is when the event happened, in milliseconds since the Unix epoch
	// (OCSF "timestamp_t"). Zero means "now" and is filled in on append.
	Time       int64 `json:"time"`
	SeverityID int   `json:"severity_id"`
	// StatusID is the outcome: 0 unknown, 1 success, 2 failure.
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	StatusDetail string `json:"status_detail,omitempty"` // the reason for the outcome
	Message      string `json:"message,omitempty"`

	Actor       *Actor     `json:"actor,omitempty"`
	SrcEndpoint *Endpoint  `json:"src_endpoint,omitempty"`
	Resources   []Resource `json:"resources,omitempty"`
	Metadata    Metadata   `json:"metadata"`
	// Unmapped holds event-specific attributes that have no OCSF field.
	Unmapped map[string]any `json:"unmapped,omitempty"`
	// PayloadRef is set instead of the payload when an event was too large to
	// be one log entry: the full canonical event is stored beside the log.
	PayloadRef *PayloadRef `json:"payload_ref,omitempty"`
}

// Actor is who performed the action: a user, a workload or a client.
type Actor struct {
	User *User `json:"user,omitempty"`
	// AppName and AppUID identify a service: its name and its SPIFFE ID or
	// OAuth client ID.
	AppName string `json:"app_name,omitempty"`
	AppUID  string `json:"app_uid,omitempty"`
	// SessionUID identifies the session or token (its jti), never the token itself.
	SessionUID string `json:"session_uid,omitempty"`
}

// User is a human or service account.
type User struct {
	UID  string `json:"uid,omitempty"`
	Name string `json:"name,omitempty"`
	Type string `json:"type,omitempty"`
}

// Endpoint is a network endpoint.
type Endpoint struct {
	IP       string `json:"ip,omitempty"`
	Port     int    `json:"port,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	SvcName  string `json:"svc_name,omitempty"`
}

// Resource is what the action was done to.
type Resource struct {
	Type string `json:"type,omitempty"`
	UID  string `json:"uid,omitempty"`
	Name string `json:"name,omitempty"`
}

// Metadata carries the event's identity and correlation.
type Metadata struct {
	UID            string `json:"uid,omitempty"`
	CorrelationUID string `json:"correlation_uid,omitempty"`
	TraceUID       string `json:"trace_uid,omitempty"`
	Product        string `json:"product,omitempty"`
	Version        string `json:"version,omitempty"` // OCSF schema version
}

// PayloadRef points at an oversized event stored beside the log.
type PayloadRef struct {
	SHA256 string `json:"sha256"` // hex of the SHA-256 of the canonical event
	Size   int    `json:"size"`
}

// OCSFVersion is the OCSF schema version events are shaped after.
const OCSFVersion = "1.3.0"

// Status IDs (OCSF status_id).
const (
	StatusUnknown = 0
	StatusSuccess = 1
	StatusFailure = 2
)

var statusNames = map[int]string{StatusUnknown: "Unknown", StatusSuccess: "Success", StatusFailure: "Failure"}

// Limits on one decoded event, whatever the configuration: they bound the
// work a request can cause.
const (
	maxStringLen     = 4096
	maxResources     = 64
	maxUnmappedKeys  = 128
	maxUnmappedDepth = 8
	maxFutureSkew    = time.Hour
)

// ValidationError is an event that does not satisfy the schema. Code is a
// stable machine-readable reason.
type ValidationError struct {
	Index int    // position of the event in its batch
	Code  string // e.g. "unknown_event_class"
	Msg   string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("event %d: %s", e.Index, e.Msg)
}

// Stable validation codes.
const (
	CodeUnknownClass    = "unknown_event_class"
	CodeUnknownActivity = "unknown_event_activity"
	CodeInvalidEvent    = "invalid_event"
	CodeEventTooLarge   = "event_too_large"
)

// Normalize validates e against the schema and fills in derived fields:
// class and activity given by ID or by name get both; a zero time becomes
// now; status and severity get their defaults. It never changes an event
// that is already normal, so Normalize is idempotent.
func (e *Event) Normalize(now time.Time) error {
	// An event that gives its class by UID, with no name or the name exactly
	// as the table has it (as every normalised event does), skips
	// resolveClass and its case folding: the result is the same.
	cls := classByUID[e.ClassUID]
	if cls == nil || (e.ClassName != "" && e.ClassName != cls.name) {
		var err error
		if cls, err = resolveClass(e.ClassUID, e.ClassName); err != nil {
			return err
		}
	}
	e.ClassUID, e.ClassName = cls.uid, cls.name
	act, err := cls.resolveActivity(e.ActivityID, e.ActivityName)
	if err != nil {
		return err
	}
	e.ActivityID, e.ActivityName = act.id, act.name

	if e.Time == 0 {
		e.Time = now.UnixMilli()
	}
	if e.Time < 0 {
		return invalid("time must be milliseconds since the Unix epoch, got %d", e.Time)
	}
	if e.Time > now.Add(maxFutureSkew).UnixMilli() {
		return invalid("time %d is more than %s in the future", e.Time, maxFutureSkew)
	}
	if e.SeverityID == 0 {
		e.SeverityID = 1 // Informational
	}
	if e.SeverityID < 0 || (e.SeverityID > 6 && e.SeverityID != 99) {
		return invalid("severity_id must be 0-6 or 99, got %d", e.SeverityID)
	}
	name, ok := statusNames[e.StatusID]
	if !ok {
		return invalid("status_id must be 0 (unknown), 1 (success) or 2 (failure), got %d", e.StatusID)
	}
	if e.Status != "" && !strings.EqualFold(e.Status, name) {
		return invalid("status %q does not match status_id %d (%s)", e.Status, e.StatusID, name)
	}
	e.Status = name
	if e.Metadata.Version == "" {
		e.Metadata.Version = OCSFVersion
	}
	if len(e.Resources) > maxResources {
		return invalid("at most %d resources, got %d", maxResources, len(e.Resources))
	}
	if err := e.checkStrings(); err != nil {
		return err
	}
	if len(e.Unmapped) > maxUnmappedKeys {
		return invalid("at most %d unmapped attributes, got %d", maxUnmappedKeys, len(e.Unmapped))
	}
	if !valueValid(e.Unmapped, 0) {
		if err := checkValue("unmapped", e.Unmapped, 0); err != nil {
			return err
		}
	}
	if e.PayloadRef != nil {
		return invalid("payload_ref is set by the log, not by clients")
	}
	return nil
}

func (e *Event) checkStrings() error {
	if e.stringsValid() {
		return nil
	}
	return e.describeBadString()
}

// stringsValid reports whether every string checkStrings checks is valid,
// without building the field names an error needs.
func (e *Event) stringsValid() bool {
	ok := validString(e.StatusDetail) && validString(e.Message) &&
		validString(e.Metadata.UID) && validString(e.Metadata.CorrelationUID) &&
		validString(e.Metadata.TraceUID) && validString(e.Metadata.Product) && validString(e.Metadata.Version)
	if a := e.Actor; a != nil {
		ok = ok && validString(a.AppName) && validString(a.AppUID) && validString(a.SessionUID)
		if u := a.User; u != nil {
			ok = ok && validString(u.UID) && validString(u.Name) && validString(u.Type)
		}
	}
	if s := e.SrcEndpoint; s != nil {
		ok = ok && validString(s.IP) && validString(s.Hostname) && validString(s.SvcName) && s.Port >= 0 && s.Port <= 65535
	}
	for i := range e.Resources {
		r := &e.Resources[i]
		ok = ok && validString(r.Type) && validString(r.UID) && validString(r.Name)
	}
	return ok
}

func validString(v string) bool { return len(v) <= maxStringLen && utf8.ValidString(v) }

// describeBadString finds the invalid string that stringsValid refused and
// says which it is.
func (e *Event) describeBadString() error {
	fields := map[string]string{
		"status_detail": e.StatusDetail, "message": e.Message,
		"metadata.uid": e.Metadata.UID, "metadata.correlation_uid": e.Metadata.CorrelationUID,
		"metadata.trace_uid": e.Metadata.TraceUID, "metadata.product": e.Metadata.Product,
		"metadata.version": e.Metadata.Version,
	}
	if a := e.Actor; a != nil {
		fields["actor.app_name"], fields["actor.app_uid"], fields["actor.session_uid"] = a.AppName, a.AppUID, a.SessionUID
		if u := a.User; u != nil {
			fields["actor.user.uid"], fields["actor.user.name"], fields["actor.user.type"] = u.UID, u.Name, u.Type
		}
	}
	if s := e.SrcEndpoint; s != nil {
		fields["src_endpoint.ip"], fields["src_endpoint.hostname"], fields["src_endpoint.svc_name"] = s.IP, s.Hostname, s.SvcName
		if s.Port < 0 || s.Port > 65535 {
			return invalid("src_endpoint.port must be 0-65535, got %d", s.Port)
		}
	}
	for i, r := range e.Resources {
		p := fmt.Sprintf("resources[%d].", i)
		fields[p+"type"], fields[p+"uid"], fields[p+"name"] = r.Type, r.UID, r.Name
	}
	for name, v := range fields {
		if err := checkString(name, v); err != nil {
			return err
		}
	}
	return nil
}

func checkString(name, v string) error {
	if len(v) > maxStringLen {
		return invalid("%s is longer than %d bytes", name, maxStringLen)
	}
	if !utf8.ValidString(v) {
		return invalid("%s is not valid UTF-8", name)
	}
	return nil
}

// valueValid reports whether checkValue accepts v, without building the
// paths an error needs.
func valueValid(v any, depth int) bool {
	if depth > maxUnmappedDepth {
		return false
	}
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			if !validString(k) || !valueValid(vv, depth+1) {
				return false
			}
		}
	case []any:
		for _, vv := range x {
			if !valueValid(vv, depth+1) {
				return false
			}
		}
	case string:
		return validString(x)
	}
	return true
}

func checkValue(path string, v any, depth int) error {
	if depth > maxUnmappedDepth {
		return invalid("%s nests deeper than %d levels", path, maxUnmappedDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			if err := checkString(path+" key", k); err != nil {
				return err
			}
			if err := checkValue(path+"."+k, vv, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for i, vv := range x {
			if err := checkValue(fmt.Sprintf("%s[%d]", path, i), vv, depth+1); err != nil {
				return err
			}
		}
	case string:
		return checkString(path, x)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return &ValidationError{Code: CodeInvalidEvent, Msg: fmt.Sprintf(format, args...)}
}

// Canonical returns the RFC 8785 (JCS) serialisation of e: the same event
// always yields the same bytes, and so the same leaf hash.
//
// The bytes are those of jcs.Transform over encoding/json's encoding of e
// (canonicalJCS). Most events are written directly in canonical form
// (appendCanonical), which is several times faster; an event holding
// anything that direct path does not handle exactly (invalid UTF-8, an
// unmapped value of another type, a non-finite number, deep nesting) takes
// the reference path. canonical_test.go checks that both agree.
func (e *Event) Canonical() ([]byte, error) {
	if out, ok := e.appendCanonical(make([]byte, 0, canonicalSizeHint)); ok {
		return out, nil
	}
	return e.canonicalJCS()
}

// canonicalJCS is the reference canonicalisation: encoding/json, then an
// RFC 8785 transform of the result.
func (e *Event) canonicalJCS() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	out, err := jcs.Transform(bytes.TrimRight(buf.Bytes(), "\n"))
	if err != nil {
		return nil, fmt.Errorf("canonicalize event: %w", err)
	}
	return out, nil
}

// DecodeEvent strictly decodes one event from JSON: unknown fields, trailing
// data and values of the wrong type are errors. It does not normalise.
func DecodeEvent(data []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var e Event
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode event: trailing data after the event")
	}
	e.Unmapped = normalizeNumbers(e.Unmapped)
	return &e, nil
}

// normalizeNumbers turns json.Number values back into float64 or int64 so
// that canonicalisation sees ordinary numbers.
func normalizeNumbers(m map[string]any) map[string]any {
	for k, v := range m {
		m[k] = normalizeNumber(v)
	}
	return m
}

func normalizeNumber(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		return normalizeNumbers(x)
	case []any:
		for i := range x {
			x[i] = normalizeNumber(x[i])
		}
	}
	return v
}

// canonicalSizeHint is the initial capacity of a canonical event buffer:
// typical events are under 1 KiB.
const canonicalSizeHint = 1280

// maxDirectDepth bounds the nesting of unmapped values that appendCanonical
// writes itself; deeper values (and cycles) take the reference path.
const maxDirectDepth = 32

// maxExactInt is the largest magnitude below which every integer is a
// float64 and RFC 8785 writes it in plain decimal: 2^53.
const maxExactInt = 1 << 53

// appendCanonical appends the RFC 8785 form of e to dst, byte for byte what
// canonicalJCS returns. Object members are written in RFC 8785 order (by
// UTF-16 code units; for the fixed ASCII field names that is the order
// written here). It reports false, with dst in an unspecified state, for an
// event it does not handle exactly; see Canonical.
func (e *Event) appendCanonical(dst []byte) ([]byte, bool) {
	ok := true
	dst = append(dst, `{"activity_id":`...)
	dst = appendCanonicalInt(dst, int64(e.ActivityID))
	dst = append(dst, `,"activity_name":`...)
	dst, ok = appendCanonicalString(dst, e.ActivityName, ok)
	if a := e.Actor; a != nil {
		dst = append(dst, `,"actor":`...)
		c := objectWriter{dst: dst, ok: ok}
		c.str("app_name", a.AppName)
		c.str("app_uid", a.AppUID)
		c.str("session_uid", a.SessionUID)
		if u := a.User; u != nil {
			c.key("user")
			uc := objectWriter{dst: c.dst, ok: c.ok}
			uc.str("name", u.Name)
			uc.str("type", u.Type)
			uc.str("uid", u.UID)
			c.dst, c.ok = uc.end()
		}
		dst, ok = c.end()
	}
	dst = append(dst, `,"class_name":`...)
	dst, ok = appendCanonicalString(dst, e.ClassName, ok)
	dst = append(dst, `,"class_uid":`...)
	dst = appendCanonicalInt(dst, int64(e.ClassUID))
	if e.Message != "" {
		dst = append(dst, `,"message":`...)
		dst, ok = appendCanonicalString(dst, e.Message, ok)
	}
	dst = append(dst, `,"metadata":`...)
	c := objectWriter{dst: dst, ok: ok}
	m := &e.Metadata
	c.str("correlation_uid", m.CorrelationUID)
	c.str("product", m.Product)
	c.str("trace_uid", m.TraceUID)
	c.str("uid", m.UID)
	c.str("version", m.Version)
	dst, ok = c.end()
	if p := e.PayloadRef; p != nil {
		dst = append(dst, `,"payload_ref":{"sha256":`...)
		dst, ok = appendCanonicalString(dst, p.SHA256, ok)
		dst = append(dst, `,"size":`...)
		dst = appendCanonicalInt(dst, int64(p.Size))
		dst = append(dst, '}')
	}
	if len(e.Resources) > 0 {
		dst = append(dst, `,"resources":[`...)
		for i := range e.Resources {
			r := &e.Resources[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			c := objectWriter{dst: dst, ok: ok}
			c.str("name", r.Name)
			c.str("type", r.Type)
			c.str("uid", r.UID)
			dst, ok = c.end()
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"severity_id":`...)
	dst = appendCanonicalInt(dst, int64(e.SeverityID))
	if s := e.SrcEndpoint; s != nil {
		dst = append(dst, `,"src_endpoint":`...)
		c := objectWriter{dst: dst, ok: ok}
		c.str("hostname", s.Hostname)
		c.str("ip", s.IP)
		if s.Port != 0 {
			c.key("port")
			c.dst = appendCanonicalInt(c.dst, int64(s.Port))
		}
		c.str("svc_name", s.SvcName)
		dst, ok = c.end()
	}
	dst = append(dst, `,"status":`...)
	dst, ok = appendCanonicalString(dst, e.Status, ok)
	if e.StatusDetail != "" {
		dst = append(dst, `,"status_detail":`...)
		dst, ok = appendCanonicalString(dst, e.StatusDetail, ok)
	}
	dst = append(dst, `,"status_id":`...)
	dst = appendCanonicalInt(dst, int64(e.StatusID))
	dst = append(dst, `,"time":`...)
	dst = appendCanonicalInt(dst, e.Time)
	if len(e.Unmapped) > 0 {
		dst = append(dst, `,"unmapped":`...)
		dst, ok = appendCanonicalMap(dst, e.Unmapped, 1, ok)
	}
	return append(dst, '}'), ok
}

// objectWriter writes the members of an object whose string members are
// omitted when empty (encoding/json's omitempty), in the order given.
type objectWriter struct {
	dst  []byte
	ok   bool
	more bool // a member has been written
}

func (w *objectWriter) key(k string) {
	if w.more {
		w.dst = append(w.dst, ',')
	} else {
		w.dst = append(w.dst, '{')
		w.more = true
	}
	w.dst = append(w.dst, '"')
	w.dst = append(w.dst, k...)
	w.dst = append(w.dst, '"', ':')
}

func (w *objectWriter) str(k, v string) {
	if v == "" {
		return
	}
	w.key(k)
	w.dst, w.ok = appendCanonicalString(w.dst, v, w.ok)
}

func (w *objectWriter) end() ([]byte, bool) {
	if !w.more {
		return append(w.dst, '{', '}'), w.ok
	}
	return append(w.dst, '}'), w.ok
}

// appendCanonicalInt writes an integer as RFC 8785 does: as the float64 it
// becomes, in ECMAScript number format.
func appendCanonicalInt(dst []byte, v int64) []byte {
	if -maxExactInt <= v && v <= maxExactInt {
		return strconv.AppendInt(dst, v, 10)
	}
	s, _ := jcs.NumberToJSON(float64(v)) // finite: cannot fail
	return append(dst, s...)
}

// appendCanonicalString writes s as an RFC 8785 string. Invalid UTF-8,
// which encoding/json would first replace, makes it report false.
func appendCanonicalString(dst []byte, s string, ok bool) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				ok = false
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), ok
}

const hexDigits = "0123456789abcdef"

// appendCanonicalValue writes one unmapped value. It handles the types
// DecodeEvent produces and the obvious ones a caller builds; any other
// reports false.
func appendCanonicalValue(dst []byte, v any, depth int, ok bool) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), ok
	case bool:
		if x {
			return append(dst, "true"...), ok
		}
		return append(dst, "false"...), ok
	case string:
		return appendCanonicalString(dst, x, ok)
	case int64:
		return appendCanonicalInt(dst, x), ok
	case int:
		return appendCanonicalInt(dst, int64(x)), ok
	case float64:
		s, err := jcs.NumberToJSON(x)
		if err != nil { // NaN or infinite: encoding/json refuses it
			return dst, false
		}
		return append(dst, s...), ok
	case map[string]any:
		if x == nil {
			return append(dst, "null"...), ok
		}
		return appendCanonicalMap(dst, x, depth+1, ok)
	case []any:
		if x == nil {
			return append(dst, "null"...), ok
		}
		if depth+1 > maxDirectDepth {
			return dst, false
		}
		dst = append(dst, '[')
		for i, el := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, ok = appendCanonicalValue(dst, el, depth+1, ok); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), ok
	default:
		return dst, false
	}
}

// appendCanonicalMap writes an object with its members sorted by the
// UTF-16 code units of their names, as RFC 8785 requires.
func appendCanonicalMap(dst []byte, m map[string]any, depth int, ok bool) ([]byte, bool) {
	if depth > maxDirectDepth {
		return dst, false
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		if !utf8.ValidString(k) {
			return dst, false // encoding/json would rewrite it, perhaps into a duplicate
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareUTF16)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, ok = appendCanonicalString(dst, k, ok)
		dst = append(dst, ':')
		if dst, ok = appendCanonicalValue(dst, m[k], depth, ok); !ok {
			return dst, false
		}
	}
	return append(dst, '}'), ok
}

// compareUTF16 orders valid UTF-8 strings by their UTF-16 code units. That
// is byte order except where a code point at or above U+10000 (a surrogate
// pair, 0xD800-0xDFFF) meets one in U+E000-U+FFFF.
func compareUTF16(a, b string) int {
	for len(a) > 0 && len(b) > 0 {
		if a[0] < utf8.RuneSelf && b[0] < utf8.RuneSelf {
			if a[0] != b[0] {
				return int(a[0]) - int(b[0])
			}
			a, b = a[1:], b[1:]
			continue
		}
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			if ka, kb := utf16Key(ra), utf16Key(rb); ka != kb {
				return int(ka) - int(kb)
			}
			return int(ra) - int(rb)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Key is the first UTF-16 code unit of r. Two runes with the same
// first unit are both supplementary, and among those code point order is
// UTF-16 order: so comparing first units, then code points, compares code
// units.
func utf16Key(r rune) rune {
	if r >= 0x10000 {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}
