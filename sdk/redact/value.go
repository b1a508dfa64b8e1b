package redact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
)

// maxDepth bounds how deep groups and decoded values of kind Any are walked;
// anything deeper is replaced by the placeholder.
const maxDepth = 32

// redactAttr returns a with secrets removed and whether anything changed.
// all is set inside a sensitive group: every value is redacted.
func (h *Handler) redactAttr(a slog.Attr, depth int, all bool) (slog.Attr, bool) {
	v := a.Value
	changed := false
	if v.Kind() == slog.KindLogValuer {
		// Pass on the resolved value: it is the one that was inspected.
		v = v.Resolve()
		changed = true
	}
	ki := h.attrKey(a.Key)
	key := ki.scrubbed
	changed = changed || ki.changed
	all = all || ki.sensitive
	if all {
		nv, ch := h.redactAllValue(v, depth)
		return slog.Attr{Key: key, Value: nv}, changed || ch
	}
	nv, ch := h.redactValue(v, depth)
	return slog.Attr{Key: key, Value: nv}, changed || ch
}

// redactAllValue replaces a value logged under a sensitive key. Groups keep
// their structure with every value inside replaced; bools, durations and
// times are kept because they cannot carry a credential.
func (h *Handler) redactAllValue(v slog.Value, depth int) (slog.Value, bool) {
	switch v.Kind() {
	case slog.KindBool, slog.KindDuration, slog.KindTime:
		return v, false
	case slog.KindGroup:
		return h.redactGroup(v, depth, true)
	case slog.KindAny:
		if isNil(v.Any()) {
			return v, false
		}
	}
	return slog.StringValue(h.r.placeholder), true
}

// redactValue removes secrets found by value from v.
func (h *Handler) redactValue(v slog.Value, depth int) (slog.Value, bool) {
	switch v.Kind() {
	case slog.KindString:
		if s, ch := h.r.scrub(v.String()); ch {
			return slog.StringValue(s), true
		}
	case slog.KindInt64:
		if cardLikeInt(v.Int64()) {
			return slog.StringValue(h.r.placeholder), true
		}
	case slog.KindUint64:
		if cardLikeUint(v.Uint64()) {
			return slog.StringValue(h.r.placeholder), true
		}
	case slog.KindGroup:
		return h.redactGroup(v, depth, false)
	case slog.KindAny:
		return h.redactAny(v.Any(), depth)
	case slog.KindLogValuer:
		// Only reached when Resolve gave up; it returns an error value then,
		// so this is defensive.
		return slog.StringValue(h.r.placeholder), true
	}
	return v, false
}

func (h *Handler) redactGroup(v slog.Value, depth int, all bool) (slog.Value, bool) {
	if depth >= maxDepth {
		return slog.StringValue(h.r.placeholder), true
	}
	attrs := v.Group()
	var out []slog.Attr // allocated on the first change
	for i, a := range attrs {
		na, ch := h.redactAttr(a, depth+1, all)
		if ch && out == nil {
			out = make([]slog.Attr, i, len(attrs))
			copy(out, attrs[:i])
		}
		if out != nil {
			out = append(out, na)
		}
	}
	if out == nil {
		return v, false
	}
	return slog.GroupValue(out...), true
}

// redactAny renders a value of kind Any once, removes secrets from the
// rendering and returns it, so that the wrapped handler logs exactly what was
// inspected. See "Other values" in the package documentation.
func (h *Handler) redactAny(x any, depth int) (slog.Value, bool) {
	if isNil(x) {
		return slog.AnyValue(x), false
	}
	var text string
	switch t := x.(type) {
	case error:
		s, ok := callString(t.Error)
		if !ok {
			return slog.StringValue(h.r.placeholder), true
		}
		text = s
	case []byte:
		text = string(t)
	case fmt.Stringer:
		s, ok := callString(t.String)
		if !ok {
			return slog.StringValue(h.r.placeholder), true
		}
		text = s
	default:
		tree, ok := decodeJSON(x)
		if ok {
			return slog.AnyValue(h.redactTree(tree, depth, false)), true
		}
		s, ok := callString(func() string { return fmt.Sprintf("%+v", x) })
		if !ok {
			return slog.StringValue(h.r.placeholder), true
		}
		text = s
	}
	s, _ := h.r.scrub(text)
	return slog.StringValue(s), true
}

// decodeJSON marshals x with encoding/json and decodes the result into maps,
// slices, strings, json.Numbers, bools and nils.
func decodeJSON(x any) (tree any, ok bool) {
	defer func() {
		if recover() != nil { // a panicking MarshalJSON
			tree, ok = nil, false
		}
	}()
	b, err := json.Marshal(x)
	if err != nil {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return nil, false
	}
	return tree, true
}

// redactTree removes secrets from a decoded JSON value, in place where it can.
func (h *Handler) redactTree(x any, depth int, all bool) any {
	if depth >= maxDepth {
		return h.r.placeholder
	}
	switch t := x.(type) {
	case map[string]any:
		var renamed map[string]any
		for k, v := range t {
			t[k] = h.redactTree(v, depth+1, all || h.r.keys.sensitive(k))
			if nk, ch := h.r.scrub(k); ch {
				if renamed == nil {
					renamed = make(map[string]any)
				}
				renamed[nk] = t[k]
				delete(t, k)
			}
		}
		for k, v := range renamed {
			t[k] = v
		}
		return t
	case []any:
		for i, v := range t {
			t[i] = h.redactTree(v, depth+1, all)
		}
		return t
	case string:
		if all {
			return h.r.placeholder
		}
		s, _ := h.r.scrub(t)
		return s
	case json.Number:
		if all {
			return h.r.placeholder
		}
		if s, ch := h.r.scrub(string(t)); ch {
			return s
		}
		return t
	}
	return x // bool or nil
}

// callString calls f, reporting false if it panics.
func callString(f func() string) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	return f(), true
}

// isNil reports whether x is nil or a nil pointer, map, slice, interface,
// func or channel.
func isNil(x any) bool {
	if x == nil {
		return true
	}
	v := reflect.ValueOf(x)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Func, reflect.Chan:
		return v.IsNil()
	}
	return false
}
