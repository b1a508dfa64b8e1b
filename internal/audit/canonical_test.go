package audit

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var canonicalIterations = flag.Int("canonical-iterations", 3000,
	"random events TestCanonicalMatchesJCS compares with the reference canonicalisation")

// checkCanonical fails t unless Canonical returns exactly what the
// reference path (encoding/json, then jcs.Transform) returns, or both fail.
// It reports whether the direct path produced the result.
func checkCanonical(t *testing.T, e *Event) (direct bool) {
	t.Helper()
	want, wantErr := e.canonicalJCS()
	got, gotErr := e.Canonical()
	_, direct = e.appendCanonical(nil)
	switch {
	case wantErr != nil || gotErr != nil:
		if wantErr == nil || gotErr == nil {
			t.Fatalf("event %#v:\nreference error %v\nCanonical error %v", e, wantErr, gotErr)
		}
		if direct {
			t.Fatalf("direct path accepted an event the reference refuses (%v): %#v", wantErr, e)
		}
	case !bytes.Equal(got, want):
		t.Fatalf("event %#v:\nreference %s\nCanonical %s", e, want, got)
	}
	return direct
}

func TestCanonicalMatchesJCS(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(8785, uint64(*canonicalIterations)))
	var direct, clean int
	for range *canonicalIterations {
		g := eventGen{r: r, messy: r.IntN(4) == 0}
		e := g.event()
		d := checkCanonical(t, e)
		if !g.messy {
			clean++
			if !d {
				t.Fatalf("direct path refused an event of plain values: %#v", e)
			}
		}
		if d {
			direct++
		}
	}
	t.Logf("%d events, %d of plain values, %d through the direct path", *canonicalIterations, clean, direct)
}

func TestCanonicalCases(t *testing.T) {
	t.Parallel()
	base := func() *Event {
		return &Event{ClassUID: 3002, ClassName: "Authentication", ActivityID: 1, ActivityName: "Logon",
			Time: 1_700_000_000_000, SeverityID: 1, StatusID: 1, Status: "Success"}
	}
	tests := []struct {
		name   string
		mod    func(e *Event)
		direct bool
	}{
		{"minimal", func(*Event) {}, true},
		{"empty pointers", func(e *Event) {
			e.Actor = &Actor{User: &User{}}
			e.SrcEndpoint = &Endpoint{}
			e.Resources = []Resource{{}, {Name: "n"}}
		}, true},
		{"empty unmapped", func(e *Event) { e.Unmapped = map[string]any{} }, true},
		{"nil nested", func(e *Event) {
			e.Unmapped = map[string]any{"m": map[string]any(nil), "a": []any(nil), "e": []any{}, "o": map[string]any{}, "n": nil}
		}, true},
		{"escapes", func(e *Event) {
			e.Message = "q\" b\\ s/ \b\f\n\r\t \x00\x01\x1f\x7f <>& \u2028\u2029 \ufeff \ufffd é 😀"
		}, true},
		{"invalid utf-8", func(e *Event) { e.Message = "a\xffb\xed\xa0\x80c\xc0\x80" }, false},
		{"invalid utf-8 keys", func(e *Event) { e.Unmapped = map[string]any{"\xff": 1, "\xfe": 2} }, false},
		{"invalid utf-8 value", func(e *Event) { e.Unmapped = map[string]any{"k": []any{"\xff"}} }, false},
		{"utf-16 key order", func(e *Event) {
			e.Unmapped = map[string]any{"\ue000": 1, "😀": 2, "\uffff": 3, "𐀀": 4, "\U0010ffff": 5, "z": 6, "é": 7, "": 8, "a\x00": 9, "a": 10}
		}, true},
		{"integers", func(e *Event) {
			e.Time = 1<<53 + 1
			e.SeverityID = -(1<<53 + 1)
			e.SrcEndpoint = &Endpoint{Port: math.MaxInt64}
			e.Unmapped = map[string]any{"a": int64(math.MinInt64), "b": 1 << 53, "c": -(1 << 53), "d": int64(1<<53 - 1)}
		}, true},
		{"floats", func(e *Event) {
			e.Unmapped = map[string]any{"z": math.Copysign(0, -1), "tiny": 5e-324, "max": math.MaxFloat64,
				"e21": 1e21, "below e21": math.Nextafter(1e21, 0), "e-6": 1e-6, "below e-6": math.Nextafter(1e-6, 0),
				"third": 1.0 / 3, "big": 295147905179352830000.0, "neg": -1.5e-7}
		}, true},
		{"NaN", func(e *Event) { e.Unmapped = map[string]any{"x": math.NaN()} }, false},
		{"infinity", func(e *Event) { e.Unmapped = map[string]any{"x": []any{math.Inf(-1)}} }, false},
		{"other types", func(e *Event) { e.Unmapped = map[string]any{"f32": float32(0.1), "u": uint(3)} }, false},
		{"json.Number", func(e *Event) { e.Unmapped = map[string]any{"n": json.Number("1.50")} }, false},
		{"deep", func(e *Event) {
			var v any = "leaf"
			for range 40 {
				v = map[string]any{"k": []any{v}}
			}
			e.Unmapped = map[string]any{"deep": v}
		}, false},
		{"payload ref", func(e *Event) { e.PayloadRef = &PayloadRef{SHA256: strings.Repeat("ab", 32), Size: 70000} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := base()
			tt.mod(e)
			if direct := checkCanonical(t, e); direct != tt.direct {
				t.Fatalf("direct path taken: %v, want %v", direct, tt.direct)
			}
		})
	}
}

// FuzzCanonical compares Canonical with the reference canonicalisation on
// events carrying fuzzed strings, numbers and unmapped JSON.
func FuzzCanonical(f *testing.F) {
	f.Add("hello", "alice", int64(1_700_000_000_000), 0.5, []byte(`{"a":1,"b":[true,null,"x"]}`))
	f.Add("\x00\x1f\"\\\u2028", "😀\ue000", int64(1<<53+1), 1e21, []byte(`{"\ue000":1,"😀":2}`))
	f.Add("\xff", "", int64(-1), math.Copysign(0, -1), []byte(`{"n":1e400}`))
	f.Add("", "\u00e9", int64(math.MaxInt64), 5e-324, []byte(`{"x":{"y":{"z":[1.0,2.5e-7,-0]}}}`))
	f.Fuzz(func(t *testing.T, msg, name string, n int64, x float64, unmapped []byte) {
		e := &Event{ClassUID: 6003, ClassName: "API Activity", ActivityID: 99, ActivityName: name,
			Time: n, Message: msg, Actor: &Actor{User: &User{Name: name}}, Metadata: Metadata{UID: msg}}
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(unmapped))
		dec.UseNumber()
		if dec.Decode(&m) == nil {
			e.Unmapped = normalizeNumbers(m)
			if e.Unmapped == nil {
				e.Unmapped = map[string]any{}
			}
			e.Unmapped[name] = x
		}
		checkCanonical(t, e)
	})
}

// eventGen makes random events. Plain ones hold only what the direct path
// handles; messy ones may hold invalid UTF-8, non-finite numbers, other
// types and deep nesting.
type eventGen struct {
	r     *rand.Rand
	messy bool
}

func (g eventGen) event() *Event {
	r := g.r
	e := &Event{
		ClassUID: int(g.int()), ClassName: g.str(), ActivityID: int(g.int()), ActivityName: g.str(),
		Time: g.int(), SeverityID: int(g.int()), StatusID: int(g.int()), Status: g.str(),
		StatusDetail: g.maybeStr(), Message: g.maybeStr(),
		Metadata: Metadata{UID: g.maybeStr(), CorrelationUID: g.maybeStr(), TraceUID: g.maybeStr(),
			Product: g.maybeStr(), Version: g.maybeStr()},
	}
	if r.IntN(3) > 0 {
		e.Actor = &Actor{AppName: g.maybeStr(), AppUID: g.maybeStr(), SessionUID: g.maybeStr()}
		if r.IntN(2) == 0 {
			e.Actor.User = &User{UID: g.maybeStr(), Name: g.maybeStr(), Type: g.maybeStr()}
		}
	}
	if r.IntN(3) > 0 {
		e.SrcEndpoint = &Endpoint{IP: g.maybeStr(), Hostname: g.maybeStr(), SvcName: g.maybeStr()}
		if r.IntN(2) == 0 {
			e.SrcEndpoint.Port = int(g.int())
		}
	}
	switch r.IntN(3) {
	case 0:
		e.Resources = []Resource{}
	case 1:
		for range r.IntN(4) + 1 {
			e.Resources = append(e.Resources, Resource{Type: g.maybeStr(), UID: g.maybeStr(), Name: g.maybeStr()})
		}
	}
	if r.IntN(5) == 0 {
		e.PayloadRef = &PayloadRef{SHA256: g.str(), Size: int(g.int())}
	}
	switch r.IntN(4) {
	case 0:
	case 1:
		e.Unmapped = map[string]any{}
	default:
		e.Unmapped = g.object(0)
	}
	return e
}

// pieces are the fragments strings are made of: ASCII, every character
// RFC 8785 escapes, characters encoding/json escapes and RFC 8785 does not,
// and characters whose UTF-16 order differs from their code point order.
var pieces = []string{
	"a", "Z", "0", " ", "id", "user", "_", "-", "/", "<", ">", "&", "'", "\"", "\\", "\x00", "\x01", "\b", "\t",
	"\n", "\v", "\f", "\r", "\x1b", "\x1f", "\x7f", "é", "ß", "\u0100", "\u07ff", "\u0800", "\u2028", "\u2029",
	"\ud7ff", "\ue000", "\ufeff", "\ufffd", "\uffff", "𐀀", "😀", "\U0010ffff", "日本",
}

// notUTF8 are byte strings that are not UTF-8.
var notUTF8 = []string{"\xff", "\xfe", "\x80", "\xc0\x80", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xe2\x82"}

func (g eventGen) str() string {
	var b strings.Builder
	for range g.r.IntN(8) {
		if g.messy && g.r.IntN(40) == 0 {
			b.WriteString(notUTF8[g.r.IntN(len(notUTF8))])
			continue
		}
		b.WriteString(pieces[g.r.IntN(len(pieces))])
	}
	return b.String()
}

func (g eventGen) maybeStr() string {
	if g.r.IntN(3) == 0 {
		return ""
	}
	return g.str()
}

func (g eventGen) int() int64 {
	r := g.r
	switch r.IntN(8) {
	case 0:
		return []int64{0, 1, -1, 1 << 53, 1<<53 + 1, -(1 << 53), -(1<<53 + 1), 1<<53 - 1, math.MaxInt64, math.MinInt64,
			1<<62 + 1, 1e15, 1e16 + 1, 1e18, 99}[r.IntN(15)]
	case 1:
		return int64(r.Uint64())
	case 2:
		return r.Int64N(1 << 60)
	default:
		return r.Int64N(100_000) - 1000
	}
}

func (g eventGen) float() float64 {
	r := g.r
	switch r.IntN(7) {
	case 0:
		return []float64{0, math.Copysign(0, -1), 5e-324, -5e-324, math.MaxFloat64, math.SmallestNonzeroFloat64 * 3,
			1e21, math.Nextafter(1e21, 0), 1e-6, math.Nextafter(1e-6, 0), 1e-7, 9007199254740993, 0.1, 1.0 / 3,
			2.2250738585072014e-308, 1e23, 9.999999999999997e+22}[r.IntN(17)]
	case 1:
		for {
			f := math.Float64frombits(r.Uint64())
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	case 2:
		return float64(r.Int64N(1<<40)) * []float64{1, -1, 1e10, 1e-10}[r.IntN(4)]
	case 3:
		if g.messy && r.IntN(20) == 0 {
			return []float64{math.NaN(), math.Inf(1), math.Inf(-1)}[r.IntN(3)]
		}
		return r.Float64()
	default:
		return (r.Float64() - 0.5) * math.Pow(10, float64(r.IntN(60)-30))
	}
}

func (g eventGen) value(depth int) any {
	r := g.r
	n := 9
	if depth > 3 {
		n = 6 // leaves only
	}
	switch r.IntN(n) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return g.str()
	case 3:
		return g.int()
	case 4:
		return int(g.int())
	case 5:
		if g.messy && r.IntN(10) == 0 {
			return []any{float32(g.float()), uint(7), json.Number("1.0"), map[string]string{"a": "b"}, struct{ A int }{1}}[r.IntN(5)]
		}
		return g.float()
	case 6:
		if r.IntN(5) == 0 {
			return map[string]any(nil)
		}
		return g.object(depth + 1)
	case 7:
		if g.messy && r.IntN(10) == 0 {
			var v any = "deep"
			for range 40 {
				v = []any{v}
			}
			return v
		}
		fallthrough
	default:
		if r.IntN(5) == 0 {
			return []any(nil)
		}
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = g.value(depth + 1)
		}
		return a
	}
}

func (g eventGen) object(depth int) map[string]any {
	m := map[string]any{}
	for range g.r.IntN(6) {
		m[g.str()] = g.value(depth)
	}
	return m
}

// TestNormalizeRefusesEveryBadString sets each checked string, in turn, to
// an invalid value: Normalize must refuse it and name the field.
func TestNormalizeRefusesEveryBadString(t *testing.T) {
	t.Parallel()
	fields := map[string]func(e *Event) *string{
		"status_detail":            func(e *Event) *string { return &e.StatusDetail },
		"message":                  func(e *Event) *string { return &e.Message },
		"metadata.uid":             func(e *Event) *string { return &e.Metadata.UID },
		"metadata.correlation_uid": func(e *Event) *string { return &e.Metadata.CorrelationUID },
		"metadata.trace_uid":       func(e *Event) *string { return &e.Metadata.TraceUID },
		"metadata.product":         func(e *Event) *string { return &e.Metadata.Product },
		"metadata.version":         func(e *Event) *string { return &e.Metadata.Version },
		"actor.app_name":           func(e *Event) *string { return &e.Actor.AppName },
		"actor.app_uid":            func(e *Event) *string { return &e.Actor.AppUID },
		"actor.session_uid":        func(e *Event) *string { return &e.Actor.SessionUID },
		"actor.user.uid":           func(e *Event) *string { return &e.Actor.User.UID },
		"actor.user.name":          func(e *Event) *string { return &e.Actor.User.Name },
		"actor.user.type":          func(e *Event) *string { return &e.Actor.User.Type },
		"src_endpoint.ip":          func(e *Event) *string { return &e.SrcEndpoint.IP },
		"src_endpoint.hostname":    func(e *Event) *string { return &e.SrcEndpoint.Hostname },
		"src_endpoint.svc_name":    func(e *Event) *string { return &e.SrcEndpoint.SvcName },
		"resources[1].type":        func(e *Event) *string { return &e.Resources[1].Type },
		"resources[1].uid":         func(e *Event) *string { return &e.Resources[1].UID },
		"resources[1].name":        func(e *Event) *string { return &e.Resources[1].Name },
	}
	now := time.UnixMilli(1_700_000_000_000)
	good := func() *Event {
		return &Event{ClassName: "Authentication", ActivityName: "Logon", Time: now.UnixMilli(),
			Actor: &Actor{User: &User{}}, SrcEndpoint: &Endpoint{Port: 443}, Resources: make([]Resource, 2),
			Unmapped: map[string]any{"k": "v"}}
	}
	if err := good().Normalize(now); err != nil {
		t.Fatalf("valid event refused: %v", err)
	}
	for name, field := range fields {
		for _, bad := range []string{"a\xffb", strings.Repeat("x", maxStringLen+1)} {
			e := good()
			*field(e) = bad
			err := e.Normalize(now)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s = %.10q...: %v", name, bad, err)
			}
		}
	}
	for name, mod := range map[string]func(e *Event){
		"src_endpoint.port": func(e *Event) { e.SrcEndpoint.Port = 65536 },
		"unmapped.k":        func(e *Event) { e.Unmapped["k"] = strings.Repeat("x", maxStringLen+1) },
		"unmapped key":      func(e *Event) { e.Unmapped["\xff"] = 1 },
		"unmapped.a[1]":     func(e *Event) { e.Unmapped["a"] = []any{"ok", "\xff"} },
		"deeper than":       func(e *Event) { e.Unmapped["d"] = []any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{1}}}}}}}}} },
	} {
		e := good()
		mod(e)
		if err := e.Normalize(now); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestClassNamesResolveToThemselves backs Normalize's shortcut: a class
// named exactly as in the table, with or without its UID, resolves to that
// class.
func TestClassNamesResolveToThemselves(t *testing.T) {
	t.Parallel()
	for i := range classes {
		c := &classes[i]
		for _, uid := range []int{0, c.uid} {
			got, err := resolveClass(uid, c.name)
			if err != nil || got != c {
				t.Errorf("resolveClass(%d, %q) = %v, %v; want class %d", uid, c.name, got, err, c.uid)
			}
		}
	}
}

// BenchmarkCanonical compares the direct path with the reference one on a
// typical event of about 1 KiB.
func BenchmarkCanonical(b *testing.B) {
	e := &Event{ClassUID: 3002, ClassName: "Authentication", ActivityID: 1, ActivityName: "Logon",
		Time: 1_760_000_000_000, SeverityID: 1, StatusID: 1, Status: "Success",
		StatusDetail: "password and WebAuthn accepted", Message: "alice@example.com logged on to the admin console",
		Actor: &Actor{User: &User{UID: "usr_01J9Z3K4T7QW2M8X5B6N0PRD4F", Name: "alice@example.com", Type: "User"},
			AppName: "bulwark-console", AppUID: "spiffe://example.org/ns/prod/sa/console", SessionUID: "jti_6b1f0c9a2e7d4f3b8a5c1e0d9f2b7a64"},
		SrcEndpoint: &Endpoint{IP: "203.0.113.42", Port: 51724, Hostname: "laptop-4411.corp.example.com"},
		Resources:   []Resource{{Type: "application", UID: "app_console", Name: "Bulwark admin console"}},
		Metadata: Metadata{UID: "evt_000000000000002a", CorrelationUID: "req_3f9c2a71b04e4d5f",
			TraceUID: "4bf92f3577b34da6a3ce929d0e0e4736", Product: "bulwark", Version: OCSFVersion},
		Unmapped: map[string]any{"auth_protocol": "OIDC", "mfa_factors": []any{"password", "webauthn"}, "risk_score": 12,
			"user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0", "padding": strings.Repeat("x", 11)},
	}
	for _, bc := range []struct {
		name string
		fn   func() ([]byte, error)
	}{{"direct", e.Canonical}, {"jcs", e.canonicalJCS}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
