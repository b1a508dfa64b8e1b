package redact

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultPlaceholder replaces every redacted value and substring unless
// [Options.Placeholder] says otherwise.
const DefaultPlaceholder = "[REDACTED]"

// Options configures a [Handler]. The zero value, like a nil *Options, gives
// the built-in rules and [DefaultPlaceholder].
type Options struct {
	// ExtraKeys are additional sensitive key words, matched like the built-in
	// ones: case and separators are ignored, so "merchant_ref" also matches
	// "merchantRef" and "X-Merchant-Ref". They apply to attribute keys, to
	// keys inside values of kind Any, and to key=value pairs in free text.
	// Only ASCII letters and digits count; a word with other letters never
	// matches.
	ExtraKeys []string

	// Placeholder replaces redacted values and substrings. Empty means
	// DefaultPlaceholder. Choose one that starts and ends with punctuation
	// and contains no digits, quotes, '=' or ':' (as the default does), so
	// that redacting already redacted text changes nothing.
	Placeholder string
}

// Handler is a [slog.Handler] that redacts secrets from records and passes
// them on to another handler. See the package documentation for what it
// removes. A Handler is safe for concurrent use if the wrapped handler is.
type Handler struct {
	next slog.Handler
	r    *redactor
	keys *keyCache // shared with the handlers derived from this one
	// redactAll is set once a group with a sensitive name has been opened
	// with WithGroup: every value logged inside it is redacted.
	redactAll bool
}

var _ slog.Handler = (*Handler)(nil)

// NewHandler returns a Handler that redacts records and passes them to next.
// opts may be nil. NewHandler panics if next is nil.
func NewHandler(next slog.Handler, opts *Options) *Handler {
	if next == nil {
		panic("redact: NewHandler called with a nil next handler")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	ph := o.Placeholder
	if ph == "" {
		ph = DefaultPlaceholder
	}
	return &Handler{next: next, r: newRedactor(o.ExtraKeys, ph), keys: new(keyCache)}
}

// NewJSONLogger returns a logger that writes JSON lines to w through a
// redacting Handler: the logger every Bulwark process uses. level may be nil,
// meaning [slog.LevelInfo]; opts may be nil.
func NewJSONLogger(w io.Writer, level slog.Leveler, opts *Options) *slog.Logger {
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}), opts))
}

// Enabled reports whether the wrapped handler handles records at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle redacts the message and attributes of r and passes the result to
// the wrapped handler. r itself is not modified; if nothing needed redacting
// it is passed on as it is.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	msg, changed := h.r.scrub(r.Message)
	var attrArr [8]slog.Attr
	attrs := attrArr[:0]
	r.Attrs(func(a slog.Attr) bool {
		a, ch := h.redactAttr(a, 0, h.redactAll)
		attrs = append(attrs, a)
		changed = changed || ch
		return true
	})
	if !changed {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	out.AddAttrs(attrs...)
	return h.next.Handle(ctx, out)
}

// WithAttrs returns a Handler whose wrapped handler has the redacted attrs
// added.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i], _ = h.redactAttr(a, 0, h.redactAll)
	}
	return &Handler{next: h.next.WithAttrs(red), r: h.r, keys: h.keys, redactAll: h.redactAll}
}

// WithGroup returns a Handler whose wrapped handler opens the group name
// (scrubbed like any key). If name is sensitive, every value logged inside
// the group is redacted.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	ki := h.attrKey(name)
	return &Handler{
		next:      h.next.WithGroup(ki.scrubbed),
		r:         h.r,
		keys:      h.keys,
		redactAll: h.redactAll || ki.sensitive,
	}
}

// keyCache maps attribute keys, which are nearly always constants, to their
// keyInfo. It holds at most maxCachedKeys entries so that a program logging
// with dynamic keys does not grow it without bound.
type keyCache struct {
	m sync.Map // string -> keyInfo
	n atomic.Int64
}

const maxCachedKeys = 4096

// keyInfo is what the handler needs to know about an attribute key.
type keyInfo struct {
	sensitive bool
	scrubbed  string // the key with secrets removed
	changed   bool   // scrubbed != key
}

// attrKey returns the keyInfo of an attribute key.
func (h *Handler) attrKey(key string) keyInfo {
	if v, ok := h.keys.m.Load(key); ok {
		return v.(keyInfo)
	}
	ki := keyInfo{sensitive: h.r.keys.sensitive(key)}
	ki.scrubbed, ki.changed = h.r.scrub(key)
	if h.keys.n.Add(1) <= maxCachedKeys {
		h.keys.m.Store(key, ki)
	}
	return ki
}
