package bank

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// Log attribute keys.
const (
	logKeyService   = "service"
	logKeyRequestID = "request_id"
	logKeyPeer      = "peer"
	logKeyErr       = "err"
	logKeyStatus    = "status"
	logKeyPayment   = "payment_id"
)

// Stable error codes of the bank's answers.
const (
	codeInvalidRequest   = httpapi.CodeInvalidRequest
	codeNotFound         = httpapi.CodeNotFound
	codeForbidden        = "forbidden"
	codeConflict         = "conflict"
	codeInsufficient     = "insufficient_funds"
	codeUpstream         = "upstream_failed"
	codeInternal         = httpapi.CodeInternal
	codeIdempotencyReuse = "idempotency_key_reused"
)

// apiError is an answer of a bank service: a status, a stable code and a
// message that is safe to show; Err is logged, never sent.
type apiError struct {
	Status  int
	Code    string
	Message string
	// PaymentID names the payment a failed POST /v1/payments recorded.
	PaymentID string
	Err       error
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func (e *apiError) Unwrap() error { return e.Err }

func errorf(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

// errorBody is the JSON body of every error answer of the bank.
type errorBody struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	PaymentID string `json:"payment_id,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError sends err: an *apiError (or an *httpapi.Error from decoding)
// as it is, anything else as a 500 without detail; the cause is logged.
func (b *Bank) writeError(w http.ResponseWriter, r *http.Request, service string, err error) {
	var (
		ae *apiError
		he *httpapi.Error
	)
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = &apiError{Status: he.Status, Code: he.Code, Message: he.Message, Err: he.Err}
	default:
		ae = &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error", Err: err}
	}
	rid := requestID(r)
	if ae.Err != nil || ae.Status >= 500 {
		b.deps.Logger.Warn("bank request failed", logKeyService, service, logKeyRequestID, rid,
			logKeyStatus, ae.Status, logKeyErr, errString(ae.Err))
	}
	if rid != "" {
		w.Header().Set(correlation.HeaderRequestID, rid)
	}
	writeJSON(w, ae.Status, errorBody{Error: ae.Message, Code: ae.Code, RequestID: rid, PaymentID: ae.PaymentID})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// contextWithoutCancel is r's context without its cancellation, for the
// writes that record an outcome after the caller may have gone.
func contextWithoutCancel(r *http.Request) context.Context {
	return context.WithoutCancel(r.Context())
}

// decode reads the strict JSON body of r into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	return httpapi.DecodeJSON(w, r, maxBodyBytes, v)
}

// requestID is the correlation id the agent signed, or a well-formed one
// the request carries (refused requests have no verified identity).
func requestID(r *http.Request) string {
	if id, ok := peer.FromContext(r.Context()); ok && id.RequestID != "" {
		return id.RequestID
	}
	if v := r.Header.Get(correlation.HeaderRequestID); correlation.ValidRequestID(v) {
		return v
	}
	return ""
}

// traceID is the trace of the request's traceparent, or "".
func traceID(r *http.Request) string {
	tid, _, _, ok := correlation.ParseTraceparent(r.Header.Get(correlation.HeaderTraceparent))
	if !ok {
		return ""
	}
	return tid
}

// identity returns what the agent verified about r (peer.Middleware ran).
func identity(r *http.Request) *peer.Identity {
	id, ok := peer.FromContext(r.Context())
	if !ok {
		return &peer.Identity{}
	}
	return id
}

// customer returns the end user the request acts for, or a 403 when the
// call carries no user (a service-to-service call to a customer API).
func customer(r *http.Request) (string, error) {
	u := identity(r).User
	if u == "" {
		return "", errorf(http.StatusForbidden, codeForbidden, "this API acts for a signed-in customer")
	}
	return u, nil
}

// newID returns prefix and 16 random bytes in hex.
func newID(prefix string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// hashJSON returns the hex SHA-256 of v's JSON encoding.
func hashJSON(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maskIBAN keeps the last four characters of an IBAN: "****1234".
func maskIBAN(iban string) string {
	iban = strings.ReplaceAll(iban, " ", "")
	if len(iban) <= 4 {
		return "****"
	}
	return "****" + iban[len(iban)-4:]
}

// event is one business or refusal audit event of a bank service.
type event struct {
	service  string
	activity int // 6003 API Activity: 1 Create, 2 Read, 4 Delete
	ok       bool
	detail   string
	resource audit.Resource
	unmapped map[string]any
}

// activityFor maps an HTTP method to the API Activity activity.
func activityFor(method string) int {
	switch method {
	case http.MethodGet, http.MethodHead:
		return 2
	case http.MethodDelete:
		return 4
	default:
		return 1
	}
}

// emit sends ev for request r to Deps.Events, with the correlation id, the
// trace and the caller. A failure to send is logged; it never fails the
// request (the forwarder spools durably).
func (b *Bank) emit(r *http.Request, ev event) {
	if b.deps.Events == nil {
		return
	}
	id := identity(r)
	e := &audit.Event{
		ClassUID:     6003,
		ActivityID:   ev.activity,
		Time:         b.deps.Now().UnixMilli(),
		StatusID:     audit.StatusFailure,
		StatusDetail: ev.detail,
		Metadata: audit.Metadata{
			CorrelationUID: requestID(r),
			TraceUID:       traceID(r),
			Product:        "bulwark demo bank",
		},
		Unmapped: map[string]any{"service": ev.service},
	}
	if ev.ok {
		e.StatusID = audit.StatusSuccess
	}
	actor := &audit.Actor{}
	if id.User != "" {
		actor.User = &audit.User{UID: id.User, Type: "User"}
	}
	if !id.Peer.IsZero() {
		actor.AppName = id.Peer.Path()[strings.LastIndex(id.Peer.Path(), "/")+1:]
		actor.AppUID = id.Peer.String()
	}
	if actor.User != nil || actor.AppUID != "" {
		e.Actor = actor
	}
	if id.Client != "" {
		e.Unmapped["client"] = id.Client
	}
	if ev.resource.UID != "" || ev.resource.Type != "" {
		e.Resources = []audit.Resource{ev.resource}
	}
	for k, v := range ev.unmapped {
		e.Unmapped[k] = v
	}
	if err := b.deps.Events.Send(context.WithoutCancel(r.Context()), e); err != nil {
		b.deps.Logger.Warn("bank audit event not sent", logKeyService, ev.service, logKeyRequestID, e.Metadata.CorrelationUID, logKeyErr, err.Error())
	}
}

// refused reports a request that service refused because it did not come
// through its agent: an Authentication failure event, the log and OnRefused.
func (b *Bank) refused(service string, r *http.Request, err error) {
	detail := "request not signed by the agent"
	switch {
	case errors.Is(err, peer.ErrExpired):
		detail = "agent signature expired"
	case errors.Is(err, peer.ErrBadSignature):
		detail = "agent signature invalid"
	}
	rid := requestID(r)
	b.deps.Logger.Warn("bank request refused: not from the agent", logKeyService, service, logKeyRequestID, rid, logKeyErr, err.Error())
	if b.deps.Events != nil {
		e := &audit.Event{
			ClassUID:     3002,
			ActivityID:   1,
			Time:         b.deps.Now().UnixMilli(),
			StatusID:     audit.StatusFailure,
			StatusDetail: detail,
			SeverityID:   3,
			SrcEndpoint:  srcEndpoint(r),
			Resources:    []audit.Resource{{Type: "service", UID: b.ids[service].String(), Name: service}},
			Metadata:     audit.Metadata{CorrelationUID: rid, TraceUID: traceID(r), Product: "bulwark demo bank"},
			Unmapped:     map[string]any{"service": service, "method": r.Method, "path": r.URL.Path},
		}
		if err := b.deps.Events.Send(context.WithoutCancel(r.Context()), e); err != nil {
			b.deps.Logger.Warn("bank audit event not sent", logKeyService, service, logKeyRequestID, rid, logKeyErr, err.Error())
		}
	}
	if b.deps.OnRefused != nil {
		b.deps.OnRefused(service, r, err)
	}
}

func srcEndpoint(r *http.Request) *audit.Endpoint {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = strings.Trim(host[:i], "[]")
	}
	if host == "" {
		return nil
	}
	return &audit.Endpoint{IP: host}
}

// logger returns the bank's logger with the service and request attributes.
func (b *Bank) logger(service string, r *http.Request) *slog.Logger {
	return b.deps.Logger.With(logKeyService, service, logKeyRequestID, requestID(r))
}
