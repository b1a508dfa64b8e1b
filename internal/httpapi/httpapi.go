// Package httpapi is the boundary between Bulwark's HTTP APIs and their
// clients: one error type that maps to a status and a stable error code and
// carries the request ID, bounded strict JSON decoding, and request-ID
// propagation. Internal error detail is logged, never sent.
package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
)

// Error is an API error: an HTTP status, a stable machine-readable code and
// a human message that is safe to show to the client.
type Error struct {
	Status  int
	Code    string
	Message string
	// Err is the cause, logged but never sent.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Stable error codes shared by every API.
const (
	CodeInvalidJSON     = "invalid_json"
	CodeInvalidRequest  = "invalid_request"
	CodeTooLarge        = "request_too_large"
	CodeUnsupportedType = "unsupported_media_type"
	CodeUnauthenticated = "unauthenticated"
	CodeNotFound        = "not_found"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id,omitempty"`
	} `json:"error"`
}

// WriteError sends err as a JSON error. An *Error is sent as it is; any
// other error becomes a 500 "internal" whose detail goes only to the log.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	var apiErr *Error
	if !errors.As(err, &apiErr) {
		apiErr = &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
			Message: "internal error; quote the request ID to an operator", Err: err}
	}
	id := RequestID(r.Context())
	if apiErr.Status >= 500 && logger != nil {
		logger.ErrorContext(r.Context(), "request failed", "request_id", id, "method", r.Method,
			"path", r.URL.Path, "code", apiErr.Code, "error", err)
	}
	var body ErrorBody
	body.Error.Code, body.Error.Message, body.Error.RequestID = apiErr.Code, apiErr.Message, id
	if apiErr.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bulwark"`)
	}
	WriteJSON(w, apiErr.Status, body)
}

// WriteJSON sends v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"encode response"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// DecodeJSON strictly decodes the request body into v: the content type
// must be JSON, the body at most limit bytes, one JSON value with no
// unknown fields and nothing after it.
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return Errorf(http.StatusUnsupportedMediaType, CodeUnsupportedType, "content type must be application/json, got %q", ct)
		}
	}
	if r.ContentLength > limit {
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, limit)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err, limit)
		}
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "unexpected data after the JSON value")
	}
	return nil
}

func jsonError(err error, limit int64) error {
	var (
		mbe    *http.MaxBytesError
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
		apiErr *Error
	)
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body exceeds %d bytes", limit)
	case errors.As(err, &syn):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "field %q: expected %s, got JSON %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "empty request body")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "truncated JSON")
	default:
		// json reports unknown fields as plain errors: `json: unknown field "x"`.
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "%v", err)
	}
}

type ctxKey int

const requestIDKey ctxKey = iota

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// RequestID returns the request ID carried by ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// WithRequestID gives every request an ID: the client's X-Request-ID when it
// is well-formed, otherwise a new random one. The ID is echoed back.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !validRequestID.MatchString(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-ID", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}
