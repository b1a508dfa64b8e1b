package redact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"
	"time"
)

// logJSON logs through a redacting JSON logger and returns the decoded
// line.
func logJSON(t *testing.T, opts *Options, log func(l *slog.Logger)) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	log(NewJSONLogger(&buf, slog.LevelDebug, opts))
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("decode %q: %v", buf.String(), err)
	}
	return m
}

// lookup returns the value at a dotted path in a decoded JSON object.
func lookup(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

type panicStringer struct{}

func (panicStringer) String() string { panic("boom") }

type panicJSON struct{ Password string }

func (panicJSON) MarshalJSON() ([]byte, error) { panic("boom") }

type secretError struct{ dsn string }

func (e *secretError) Error() string { return "connect " + e.dsn + ": refused" }

type loopValuer struct{}

func (loopValuer) LogValue() slog.Value { return slog.AnyValue(loopValuer{}) }

type selfGroup struct{}

func (selfGroup) LogValue() slog.Value {
	return slog.GroupValue(slog.String("x", "y"), slog.Any("again", selfGroup{}))
}

type creds struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Expires  int    `json:"token_expires_in"`
}

func TestHandlerRedacts(t *testing.T) {
	t.Parallel()
	var nilErr *secretError
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		path string
		want any
	}{
		{"message", func(l *slog.Logger) { l.Info("dial failed: password=hunter2 host=db") }, "msg", "dial failed: password=[REDACTED] host=db"},
		{"sensitive key", func(l *slog.Logger) { l.Info("m", "db_password", "hunter2") }, "db_password", "[REDACTED]"},
		{"sensitive key int", func(l *slog.Logger) { l.Info("m", "pin", 1234) }, "pin", "[REDACTED]"},
		{"sensitive key float", func(l *slog.Logger) { l.Info("m", "otp", 123456.0) }, "otp", "[REDACTED]"},
		{"sensitive key keeps bool", func(l *slog.Logger) { l.Info("m", "token_present", true, "password_set", false) }, "password_set", false},
		{"sensitive key keeps duration", func(l *slog.Logger) { l.Info("m", "session", 5*time.Second) }, "session", float64(5 * time.Second)},
		{"sensitive key keeps time", func(l *slog.Logger) { l.Info("m", "password", time.Unix(0, 0).UTC()) }, "password", "1970-01-01T00:00:00Z"},
		{"sensitive key any", func(l *slog.Logger) { l.Info("m", "credentials", creds{User: "u", Password: "p"}) }, "credentials", "[REDACTED]"},
		{"sensitive key nil any", func(l *slog.Logger) { l.Info("m", "token", nil) }, "token", nil},
		{"metadata key kept", func(l *slog.Logger) { l.Info("m", "token_type", "DPoP") }, "token_type", "DPoP"},
		{"innocuous key scrubbed by value", func(l *slog.Logger) { l.Info("m", "header", "Bearer abc123def456") }, "header", "Bearer [REDACTED]"},
		{"card int", func(l *slog.Logger) { l.Info("m", "ref", 4111111111111111) }, "ref", "[REDACTED]"},
		{"card uint", func(l *slog.Logger) { l.Info("m", "ref", uint64(5555555555554444)) }, "ref", "[REDACTED]"},
		{"non card int", func(l *slog.Logger) { l.Info("m", "ref", 1234567890123456) }, "ref", float64(1234567890123456)},
		{"key scrubbed", func(l *slog.Logger) { l.Info("m", "id eyJa.eyJb.c", 1) }, "id [REDACTED]", float64(1)},
		{"group", func(l *slog.Logger) {
			l.Info("m", slog.Group("db", slog.String("user", "app"), slog.String("password", "p")))
		}, "db.password", "[REDACTED]"},
		{"group keeps other", func(l *slog.Logger) {
			l.Info("m", slog.Group("db", slog.String("user", "app"), slog.String("password", "p")))
		}, "db.user", "app"},
		{"nested group", func(l *slog.Logger) {
			l.Info("m", slog.Group("a", slog.Group("b", slog.Group("c", slog.String("x", "4111 1111 1111 1111")))))
		}, "a.b.c.x", "[REDACTED]"},
		{"sensitive group keeps structure", func(l *slog.Logger) {
			l.Info("m", slog.Group("credentials", slog.String("user", "app"), slog.Bool("mfa", true)))
		}, "credentials.user", "[REDACTED]"},
		{"sensitive group keeps bool", func(l *slog.Logger) {
			l.Info("m", slog.Group("credentials", slog.String("user", "app"), slog.Bool("mfa", true)))
		}, "credentials.mfa", true},
		{"inline group", func(l *slog.Logger) { l.Info("m", slog.Group("", slog.String("secret", "s"))) }, "secret", "[REDACTED]"},
		{"with attrs", func(l *slog.Logger) { l.With("api_key", "k", "note", "pwd=x").Info("m") }, "api_key", "[REDACTED]"},
		{"with attrs by value", func(l *slog.Logger) { l.With("api_key", "k", "note", "pwd=x").Info("m") }, "note", "pwd=[REDACTED]"},
		{"with group", func(l *slog.Logger) { l.WithGroup("req").Info("m", "cookie", "sid=1") }, "req.cookie", "[REDACTED]"},
		{"with group then attrs", func(l *slog.Logger) {
			l.WithGroup("req").With("authorization", "Basic abc").WithGroup("inner").Info("m", "n", 1)
		}, "req.authorization", "[REDACTED]"},
		{"sensitive with group", func(l *slog.Logger) { l.WithGroup("session").Info("m", "id", "abc") }, "session.id", "[REDACTED]"},
		{"sensitive with group attrs", func(l *slog.Logger) { l.WithGroup("secrets").With("name", "db").Info("m") }, "secrets.name", "[REDACTED]"},
		{"sensitive with group message", func(l *slog.Logger) { l.WithGroup("session").Info("opened") }, "msg", "opened"},
		{"log valuer", func(l *slog.Logger) { l.Info("m", "v", valuer{"token=abc"}) }, "v.detail", "token=[REDACTED]"},
		{"log valuer under sensitive key", func(l *slog.Logger) { l.Info("m", "secret", valuer{"abc"}) }, "secret.detail", "[REDACTED]"},
		{"log valuer loop", func(l *slog.Logger) { l.Info("m", "v", loopValuer{}) }, "v", "LogValue called too many times on Value of type redact.loopValuer"},
		{"log valuer self group", func(l *slog.Logger) { l.Info("m", "v", selfGroup{}) }, "v.x", "y"},
		{"error", func(l *slog.Logger) { l.Info("m", "err", &secretError{"postgres://app:pw@db"}) }, "err", "connect postgres://app:[REDACTED]@db: refused"},
		{"wrapped error", func(l *slog.Logger) {
			l.Info("m", "err", fmt.Errorf("login: %w", errors.New("bad token eyJa.eyJb.c")))
		}, "err", "login: bad token [REDACTED]"},
		{"nil error pointer", func(l *slog.Logger) { l.Info("m", "err", nilErr) }, "err", "<nil>"},
		{"bytes", func(l *slog.Logger) { l.Info("m", "body", []byte(`{"pin":"1234"}`)) }, "body", `{"pin":"[REDACTED]"}`},
		{"stringer", func(l *slog.Logger) { l.Info("m", "v", stringer("Bearer abcdef123456")) }, "v", "Bearer [REDACTED]"},
		{"panicking stringer", func(l *slog.Logger) { l.Info("m", "v", panicStringer{}) }, "v", "[REDACTED]"},
		{"struct field by key", func(l *slog.Logger) { l.Info("m", "c", creds{User: "u", Password: "p", Expires: 60}) }, "c.password", "[REDACTED]"},
		{"struct field kept", func(l *slog.Logger) { l.Info("m", "c", creds{User: "u", Password: "p", Expires: 60}) }, "c.user", "u"},
		{"struct number kept", func(l *slog.Logger) { l.Info("m", "c", creds{User: "u", Password: "p", Expires: 60}) }, "c.token_expires_in", float64(60)},
		{"map by key", func(l *slog.Logger) { l.Info("m", "h", map[string]string{"Authorization": "x", "Accept": "y"}) }, "h.Authorization", "[REDACTED]"},
		{"map by value", func(l *slog.Logger) { l.Info("m", "h", map[string]any{"n": 4111111111111111}) }, "h.n", "[REDACTED]"},
		{"map nested sensitive", func(l *slog.Logger) {
			l.Info("m", "h", map[string]any{"auth": map[string]any{"token": "t", "ok": true}})
		}, "h.auth.token", "[REDACTED]"},
		{"slice", func(l *slog.Logger) { l.Info("m", "s", []string{"a", "pwd=b"}) }, "s", []any{"a", "pwd=[REDACTED]"}},
		{"raw json", func(l *slog.Logger) { l.Info("m", "j", json.RawMessage(`{"secret":"s","a":[1]}`)) }, "j.secret", "[REDACTED]"},
		{"panicking marshaler", func(l *slog.Logger) { l.Info("m", "v", panicJSON{"pw"}) }, "v", "{Password:[REDACTED]}"},
		{"unmarshalable", func(l *slog.Logger) { l.Info("m", "c", complex(1, 2)) }, "c", "(1+2i)"},
		{"attr key scrubbed in map", func(l *slog.Logger) { l.Info("m", "h", map[string]int{"pin=1234": 1}) }, "h.pin=[REDACTED]", "[REDACTED]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := logJSON(t, nil, tc.log)
			got := lookup(m, tc.path)
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tc.want)
			if !bytes.Equal(gj, wj) {
				t.Errorf("%s = %s, want %s (record %v)", tc.path, gj, wj, m)
			}
		})
	}
}

func TestHandlerSecretsAbsent(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-S3cr3t"
	tests := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"sensitive key", func(l *slog.Logger) { l.Info("m", "password", pw) }},
		{"text pair", func(l *slog.Logger) { l.Info("m", "detail", "password="+pw) }},
		{"stringer fields hidden", func(l *slog.Logger) {
			l.Info("m", "v", struct {
				stringer
				Password string
			}{"ok", pw})
		}},
		{"deep group", func(l *slog.Logger) {
			a := slog.String("password", pw)
			for range 50 {
				a = slog.Group("g", a)
			}
			l.Info("m", a)
		}},
		{"deep map", func(l *slog.Logger) {
			var v any = map[string]any{"x": "password=" + pw}
			for range 50 {
				v = map[string]any{"g": v}
			}
			l.Info("m", "v", v)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, mk := range []func(*bytes.Buffer) slog.Handler{
				func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
				func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			} {
				var buf bytes.Buffer
				tc.log(slog.New(NewHandler(mk(&buf), nil)))
				if strings.Contains(buf.String(), pw) || strings.Contains(buf.String(), "hunter2") {
					t.Errorf("secret in output: %s", buf.String())
				}
			}
		})
	}
}

func TestHandlerOptions(t *testing.T) {
	t.Parallel()
	m := logJSON(t, &Options{ExtraKeys: []string{"merchant_ref"}, Placeholder: "<hidden>"}, func(l *slog.Logger) {
		l.Info("ref merchantRef=abc", "X-Merchant-Ref", "abc", "password", "p", "merchant", "m")
	})
	want := map[string]any{"msg": "ref merchantRef=<hidden>", "X-Merchant-Ref": "<hidden>", "password": "<hidden>", "merchant": "m"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

func TestHandlerEnabled(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := NewJSONLogger(&buf, nil, nil)
	ctx := context.Background()
	if l.Enabled(ctx, slog.LevelDebug) {
		t.Errorf("debug enabled with a nil level")
	}
	if !l.Enabled(ctx, slog.LevelInfo) {
		t.Errorf("info disabled with a nil level")
	}
	l.Debug("password=x")
	if buf.Len() != 0 {
		t.Errorf("debug record written: %s", buf.String())
	}
	var lv slog.LevelVar
	lv.Set(slog.LevelError)
	h := NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: &lv}), nil)
	if h.Enabled(ctx, slog.LevelWarn) || !h.Enabled(ctx, slog.LevelError) {
		t.Errorf("Enabled does not follow the wrapped handler's level")
	}
	if h.WithGroup("g").Enabled(ctx, slog.LevelWarn) || h.WithAttrs([]slog.Attr{slog.Int("a", 1)}).Enabled(ctx, slog.LevelWarn) {
		t.Errorf("derived handlers do not follow the wrapped handler's level")
	}
}

func TestNewHandlerNilNextPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Errorf("NewHandler(nil, nil) did not panic")
		}
	}()
	NewHandler(nil, nil)
}

// recorder is a fake slog.Handler that keeps the records it is given.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestHandleLeavesRecordAlone(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := NewHandler(rec, nil)
	r := slog.NewRecord(time.Unix(1, 0), slog.LevelInfo, "pwd=x", 42)
	r.AddAttrs(slog.String("password", "p"), slog.Int("n", 1))
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if r.Message != "pwd=x" {
		t.Errorf("original message changed to %q", r.Message)
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "password" && a.Value.String() != "p" {
			t.Errorf("original attr changed to %v", a)
		}
		return true
	})
	got := rec.records[0]
	if got.Message != "pwd=[REDACTED]" || !got.Time.Equal(r.Time) || got.Level != r.Level || got.PC != r.PC {
		t.Errorf("passed on %+v", got)
	}

	// A clean record is passed on with its attributes as they are.
	clean := slog.NewRecord(time.Unix(2, 0), slog.LevelWarn, "ok", 7)
	clean.AddAttrs(slog.String("user", "alice"))
	if err := h.Handle(context.Background(), clean); err != nil {
		t.Fatal(err)
	}
	got = rec.records[1]
	if got.Message != "ok" || got.NumAttrs() != 1 || got.PC != 7 {
		t.Errorf("clean record passed on as %+v", got)
	}
}

func TestHandlerConcurrent(t *testing.T) {
	t.Parallel()
	var buf safeBuffer
	l := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), nil)).With("service", "ledger")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			gl := l.WithGroup(fmt.Sprintf("g%d", i))
			for j := range 50 {
				gl.Info("charge", "card", "4111111111111111", "n", j, "note", "token=abc")
			}
		})
	}
	wg.Wait()
	if out := buf.String(); strings.Contains(out, "4111111111111111") || strings.Contains(out, "token=abc") {
		t.Errorf("secret in concurrent output")
	}
}

type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSlogConformance runs the standard library's handler test suite over a
// redacting handler.
func TestSlogConformance(t *testing.T) {
	t.Parallel()
	var buf *bytes.Buffer
	slogtest.Run(t, func(*testing.T) slog.Handler {
		buf = new(bytes.Buffer)
		return NewHandler(slog.NewJSONHandler(buf, nil), nil)
	}, func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("decode %q: %v", buf.String(), err)
		}
		return m
	})
}
