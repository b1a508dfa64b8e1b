package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

type payload struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func TestDecodeJSONRefusesHostileBodies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int
		wantCode    string
	}{
		{"valid", "application/json", `{"name":"a","count":1}`, 0, ""},
		{"valid with charset", "application/json; charset=utf-8", `{"name":"a"}`, 0, ""},
		{"malformed", "application/json", `{"name":`, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"syntax error", "application/json", `{"name" "a"}`, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"unknown field", "application/json", `{"name":"a","admin":true}`, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"wrong type", "application/json", `{"count":"many"}`, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"trailing data", "application/json", `{"name":"a"} {"name":"b"}`, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"empty", "application/json", ``, http.StatusBadRequest, httpapi.CodeInvalidJSON},
		{"too large", "application/json", `{"name":"` + strings.Repeat("x", 2000) + `"}`, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge},
		{"form content type", "application/x-www-form-urlencoded", `name=a`, http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType},
		{"garbage content type", "}{", `{}`, http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.contentType)
			var p payload
			err := httpapi.DecodeJSON(httptest.NewRecorder(), req, 1024, &p)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("DecodeJSON: %v", err)
				}
				return
			}
			var apiErr *httpapi.Error
			if !errors.As(err, &apiErr) || apiErr.Status != tt.wantStatus || apiErr.Code != tt.wantCode {
				t.Fatalf("DecodeJSON error = %v, want %d %s", err, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestWriteErrorNeverLeaksInternals(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	h := httpapi.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, logger, errors.New(`pq: relation "audit_entries" does not exist at /srv/db.go:42`))
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "audit_entries") || strings.Contains(rec.Body.String(), "db.go") {
		t.Fatalf("internal detail leaked to the client: %s", rec.Body)
	}
	var eb httpapi.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code != httpapi.CodeInternal || eb.Error.RequestID == "" {
		t.Fatalf("body %s", rec.Body)
	}
	if !strings.Contains(logs.String(), "audit_entries") || !strings.Contains(logs.String(), eb.Error.RequestID) {
		t.Fatalf("the operator's log lacks the detail or the request ID: %s", logs.String())
	}
}

func TestRequestIDPropagation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		kept     bool
	}{
		{"well formed", "req-123.abc", true},
		{"header injection", "abc\r\nSet-Cookie: x=1", false},
		{"too long", strings.Repeat("a", 65), false},
		{"absent", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var seen string
			h := httpapi.WithRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = httpapi.RequestID(r.Context()) }))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.in != "" {
				req.Header["X-Request-Id"] = []string{tt.in}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Header().Get("X-Request-ID"); got != seen || seen == "" {
				t.Fatalf("echoed %q, context %q", got, seen)
			}
			if (seen == tt.in) != tt.kept {
				t.Fatalf("request ID %q became %q", tt.in, seen)
			}
		})
	}
}
