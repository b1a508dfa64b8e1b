package policy

// The OpenID AuthZEN Authorization API 1.0: access evaluation, batch
// access evaluations and PDP metadata discovery.
//
// Mapping to Cedar:
//   - subject {type, id} is the principal: "user" / "User" / "Bulwark::User"
//     are Bulwark::User. The subject's "properties" are IGNORED: roles and
//     attributes of principals come only from the entity store, so that an
//     enforcement point cannot promote a user by claiming a role.
//   - action {name} is Bulwark::Action::"name"; its properties are ignored.
//   - resource {type, id} is the resource; its "properties", when present,
//     are the attributes (Cedar JSON values) of a request entity that
//     replaces the store's entity of that UID for this request: the
//     enforcement point knows the resource it serves (a payment's amount).
//   - context is an object of Cedar JSON values merged over the
//     least-privileged defaults (time now, zone "", region "", mfa false,
//     riskScore 100, tokenScopes []).
//
// Members the API does not define are ignored, as the AuthZEN information
// model is extensible; an ignored member can never grant anything, since
// every omitted value takes its least-privileged default. Duplicate member
// names and invalid UTF-8 are refused, so that no parser differential
// between a PEP and this PDP can choose which of two subjects is decided
// on. Malformed JSON is a 400, a body over the limit a 413; an unknown
// action or entity type is a decision (false, with a reason), not an
// error.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// AuthZEN paths.
const (
	AuthZENEvaluationPath  = "/access/v1/evaluation"
	AuthZENEvaluationsPath = "/access/v1/evaluations"
	AuthZENMetadataPath    = "/.well-known/authzen-configuration"
)

// Batch semantics of the Access Evaluations API (options.evaluations_semantic).
const (
	SemanticExecuteAll          = "execute_all"
	SemanticDenyOnFirstDeny     = "deny_on_first_deny"
	SemanticPermitOnFirstPermit = "permit_on_first_permit"
)

// maxRequestIDLen bounds the X-Request-ID echoed back verbatim.
const maxRequestIDLen = 256

// azEntityValue is a decoded AuthZEN subject or resource.
type azEntityValue struct {
	typ, id  string
	props    cedar.Record
	hasProps bool
}

// azEval is a decoded access evaluation request, or the defaults or one
// item of a batch. A nil member was absent (or null).
type azEval struct {
	subject, resource *azEntityValue
	action            *string
	context           cedar.RecordMap // shared by a batch's items: read only
	hasContext        bool            // "context" was present, even as null
}

// azBatch is a decoded Access Evaluations request.
type azBatch struct {
	defaults    azEval
	evaluations []azEval
	semantic    string
}

// azResponse is an access evaluation response.
type azResponse struct {
	Decision bool              `json:"decision"`
	Context  azResponseContext `json:"context"`
}

type azResponseContext struct {
	ID            string            `json:"id"`
	Reasons       []string          `json:"reasons"`
	ReasonAdmin   map[string]string `json:"reason_admin"`
	BundleVersion int64             `json:"bundle_version"`
	Error         *azItemError      `json:"error,omitempty"`
}

// azItemError is the error of one evaluation of a batch that could not be
// evaluated (it is denied).
type azItemError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

type azEvaluationsResponse struct {
	Evaluations []azResponse `json:"evaluations"`
}

// AuthZENMetadata is the PDP metadata document.
type AuthZENMetadata struct {
	PolicyDecisionPoint       string `json:"policy_decision_point"`
	AccessEvaluationEndpoint  string `json:"access_evaluation_endpoint"`
	AccessEvaluationsEndpoint string `json:"access_evaluations_endpoint"`
}

// RegisterAuthZEN serves the AuthZEN API on mux. The evaluation endpoints
// are wrapped in pep, which authenticates the enforcement point and stores
// it with WithCaller (nil means no authentication, for tests only); the
// metadata document is public.
func (d *DecisionService) RegisterAuthZEN(mux *http.ServeMux, pep func(http.Handler) http.Handler) {
	if pep == nil {
		pep = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("POST "+AuthZENEvaluationPath, withAuthZENRequestID(pep(http.HandlerFunc(d.serveEvaluation))))
	mux.Handle("POST "+AuthZENEvaluationsPath, withAuthZENRequestID(pep(http.HandlerFunc(d.serveEvaluations))))
	mux.Handle("GET "+AuthZENMetadataPath, withAuthZENRequestID(http.HandlerFunc(d.serveMetadata)))
}

// withAuthZENRequestID gives each request an ID and, as AuthZEN asks,
// echoes the client's X-Request-ID in the response unchanged.
func withAuthZENRequestID(next http.Handler) http.Handler {
	return httpapi.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= maxRequestIDLen {
			w.Header().Set("X-Request-ID", id)
		}
		next.ServeHTTP(w, r)
	}))
}

func (d *DecisionService) serveMetadata(w http.ResponseWriter, r *http.Request) {
	base := d.cfg.BaseURL
	if base == "" {
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		base = scheme + "://" + r.Host
	}
	httpapi.WriteJSON(w, http.StatusOK, AuthZENMetadata{
		PolicyDecisionPoint:       base,
		AccessEvaluationEndpoint:  base + AuthZENEvaluationPath,
		AccessEvaluationsEndpoint: base + AuthZENEvaluationsPath,
	})
}

// readAuthZENBody reads a JSON request body of at most limit bytes.
func readAuthZENBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, httpapi.Errorf(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType,
				"content type must be application/json, got %q", clipDecisionEcho(ct))
		}
	}
	if r.ContentLength > limit {
		return nil, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge,
			"request body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body exceeds %d bytes", limit)
		}
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "read request body: %v", err)
	}
	return body, nil
}

func (d *DecisionService) serveEvaluation(w http.ResponseWriter, r *http.Request) {
	body, err := readAuthZENBody(w, r, d.cfg.MaxRequestBytes)
	if err != nil {
		httpapi.WriteError(w, r, d.log, err)
		return
	}
	in, err := decodeEvaluation(body, d.now())
	if err != nil {
		httpapi.WriteError(w, r, d.log, err)
		return
	}
	in.correlation = httpapi.RequestID(r.Context())
	res := d.decide(r.Context(), in)
	httpapi.WriteJSON(w, http.StatusOK, azResult(&res))
}

func (d *DecisionService) serveEvaluations(w http.ResponseWriter, r *http.Request) {
	body, err := readAuthZENBody(w, r, d.cfg.MaxRequestBytes)
	if err != nil {
		httpapi.WriteError(w, r, d.log, err)
		return
	}
	req, err := decodeBatch(body)
	if err != nil {
		httpapi.WriteError(w, r, d.log, err)
		return
	}
	semantic := req.semantic
	switch semantic {
	case SemanticExecuteAll, SemanticDenyOnFirstDeny, SemanticPermitOnFirstPermit:
	default:
		httpapi.WriteError(w, r, d.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest,
			"options.evaluations_semantic %q is not one of %s, %s, %s", clipDecisionEcho(semantic),
			SemanticExecuteAll, SemanticDenyOnFirstDeny, SemanticPermitOnFirstPermit))
		return
	}
	correlation := httpapi.RequestID(r.Context())
	now := d.now()
	if len(req.evaluations) == 0 {
		// Without evaluations the request is a single access evaluation,
		// answered as one.
		in, err := mapEvaluation(&req.defaults, now)
		if err != nil {
			httpapi.WriteError(w, r, d.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "%v", err))
			return
		}
		in.correlation = correlation
		res := d.decide(r.Context(), in)
		httpapi.WriteJSON(w, http.StatusOK, azResult(&res))
		return
	}
	if len(req.evaluations) > d.cfg.MaxBatchEvaluations {
		httpapi.WriteError(w, r, d.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest,
			"%d evaluations; at most %d are allowed in one request", len(req.evaluations), d.cfg.MaxBatchEvaluations))
		return
	}
	// Evaluate in order (up to the first deny or permit when the semantic
	// says so), then log the decisions made as one group before answering.
	ins := make([]*decisionInput, 0, len(req.evaluations))
	results := make([]decisionResult, 0, len(req.evaluations))
	itemErrs := make([]*azItemError, 0, len(req.evaluations))
	for i := range req.evaluations {
		item := mergeDefaults(&req.defaults, &req.evaluations[i])
		in, err := mapEvaluation(&item, now)
		var itemErr *azItemError
		if err != nil {
			// One evaluation that cannot be mapped is denied, with its
			// error; the others are still answered.
			itemErr = &azItemError{Status: http.StatusBadRequest, Message: fmt.Sprintf("evaluations[%d]: %v", i, err)}
			in = &decisionInput{api: APIAuthZEN, refusal: itemErr.Message}
		}
		in.correlation = correlation
		res := d.evaluate(in)
		ins, results, itemErrs = append(ins, in), append(results, res), append(itemErrs, itemErr)
		if (semantic == SemanticDenyOnFirstDeny && !res.Allowed) || (semantic == SemanticPermitOnFirstPermit && res.Allowed) {
			break
		}
	}
	d.logDecisions(r.Context(), ins, results)
	out := azEvaluationsResponse{Evaluations: make([]azResponse, len(results))}
	for i := range results {
		out.Evaluations[i] = azResult(&results[i])
		out.Evaluations[i].Context.Error = itemErrs[i]
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// decodeEvaluation decodes an Access Evaluation request body and maps it
// to a Cedar request; its errors are *httpapi.Error (400).
func decodeEvaluation(body []byte, now time.Time) (*decisionInput, error) {
	dec, err := newAzDecoder(body)
	if err != nil {
		return nil, err
	}
	var ev azEval
	err = readObject(dec, "the request body", func(name string) error {
		known, err := readEvaluationMember(dec, "", name, &ev)
		if !known {
			return skipValue(dec) // members the API does not define are ignored
		}
		return err
	})
	if err == nil {
		err = azEnd(dec)
	}
	if err != nil {
		return nil, err
	}
	in, err := mapEvaluation(&ev, now)
	if err != nil {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "%v", err)
	}
	return in, nil
}

// decodeBatch decodes an Access Evaluations request body.
func decodeBatch(body []byte) (*azBatch, error) {
	dec, err := newAzDecoder(body)
	if err != nil {
		return nil, err
	}
	b := &azBatch{semantic: SemanticExecuteAll}
	err = readObject(dec, "the request body", func(name string) error {
		switch name {
		case "evaluations":
			if dec.PeekKind() == 'n' {
				return skipValue(dec)
			}
			tok, err := dec.ReadToken()
			if err != nil {
				return azSyntaxError(err)
			}
			if tok.Kind() != '[' {
				return azTypeError("evaluations", "an array")
			}
			for dec.PeekKind() != ']' {
				var item azEval
				prefix := fmt.Sprintf("evaluations[%d]", len(b.evaluations))
				err := readObject(dec, prefix, func(name string) error {
					known, err := readEvaluationMember(dec, prefix+".", name, &item)
					if !known {
						return skipValue(dec)
					}
					return err
				})
				if err != nil {
					return err
				}
				b.evaluations = append(b.evaluations, item)
			}
			_, err = dec.ReadToken()
			return azErr(err)
		case "options":
			if dec.PeekKind() == 'n' {
				return skipValue(dec)
			}
			return readObject(dec, "options", func(name string) error {
				if name != "evaluations_semantic" {
					return skipValue(dec)
				}
				s, err := readString(dec, "options.evaluations_semantic")
				if s != "" {
					b.semantic = s
				}
				return err
			})
		default:
			known, err := readEvaluationMember(dec, "", name, &b.defaults)
			if !known {
				return skipValue(dec)
			}
			return err
		}
	})
	if err == nil {
		err = azEnd(dec)
	}
	return b, err
}

// newAzDecoder starts decoding a request body.
func newAzDecoder(body []byte) (*jsontext.Decoder, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "empty request body")
	}
	return jsontext.NewDecoder(bytes.NewReader(body)), nil
}

// azEnd checks that nothing follows the request's JSON value.
func azEnd(dec *jsontext.Decoder) error {
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "unexpected data after the JSON value")
	}
	return nil
}

func azErr(err error) error {
	if err != nil {
		return azSyntaxError(err)
	}
	return nil
}

// mergeDefaults returns item with the request's top-level values for the
// members it leaves out.
func mergeDefaults(def, item *azEval) azEval {
	out := *item
	if out.subject == nil {
		out.subject = def.subject
	}
	if out.action == nil {
		out.action = def.action
	}
	if out.resource == nil {
		out.resource = def.resource
	}
	if !out.hasContext {
		out.context, out.hasContext = def.context, def.hasContext
	}
	return out
}

func azResult(res *decisionResult) azResponse {
	reasons := res.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	return azResponse{Decision: res.Allowed, Context: azResponseContext{
		ID: res.ID, Reasons: reasons, ReasonAdmin: map[string]string{"en": res.reasonAdmin()},
		BundleVersion: res.BundleVersion,
	}}
}

// mapEvaluation maps an AuthZEN evaluation to a Cedar request. It fails
// only for a request that is not well-formed (a missing or oversized
// identifier); an unknown type or action maps fine and is refused by the
// evaluator.
func mapEvaluation(ev *azEval, now time.Time) (*decisionInput, error) {
	in := &decisionInput{api: APIAuthZEN}
	var err error
	if in.principal, err = mapEntity("subject", ev.subject); err != nil {
		return nil, err
	}
	if ev.action == nil || *ev.action == "" {
		return nil, errors.New("action.name is required")
	}
	if len(*ev.action) > maxEntityIDBytes {
		return nil, fmt.Errorf("action.name is longer than %d bytes", maxEntityIDBytes)
	}
	in.action = requestActionUID(*ev.action)
	if in.resource, err = mapEntity("resource", ev.resource); err != nil {
		return nil, err
	}
	if ev.resource.hasProps {
		in.entities = cedar.EntityMap{in.resource: cedar.Entity{UID: in.resource, Attributes: ev.resource.props}}
	}
	ctx := defaultRequestContext(now)
	for k, v := range ev.context {
		ctx[k] = v
	}
	in.context = cedar.NewRecord(ctx)
	return in, nil
}

func mapEntity(field string, e *azEntityValue) (cedar.EntityUID, error) {
	if e == nil {
		return cedar.EntityUID{}, fmt.Errorf("%s is required", field)
	}
	if e.typ == "" {
		return cedar.EntityUID{}, fmt.Errorf("%s.type is required", field)
	}
	if e.id == "" {
		return cedar.EntityUID{}, fmt.Errorf("%s.id is required", field)
	}
	if len(e.typ) > maxEntityIDBytes || len(e.id) > maxEntityIDBytes {
		return cedar.EntityUID{}, fmt.Errorf("%s.type and %s.id must be at most %d bytes", field, field, maxEntityIDBytes)
	}
	return cedar.NewEntityUID(requestEntityType(e.typ), cedar.String(e.id)), nil
}

// The request decoder. It streams tokens (jsontext) rather than reflecting
// (encoding/json) and builds Cedar values directly: it is on the path of
// every decision. Duplicate member names and invalid UTF-8 are refused.

// azTypeError names the member that is not what the API expects.
func azTypeError(field, want string) error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "%s must be %s", field, want)
}

// azSyntaxError turns a jsontext error into a 400 without internals.
func azSyntaxError(err error) error {
	var apiErr *httpapi.Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "truncated JSON")
	}
	msg := strings.TrimPrefix(err.Error(), "jsontext: ")
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "malformed JSON: %s", clipDecisionEcho(msg))
}

// readObject reads an object, calling member for each member name with
// the decoder positioned at its value; member must consume the value.
func readObject(dec *jsontext.Decoder, field string, member func(name string) error) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return azSyntaxError(err)
	}
	if tok.Kind() != '{' {
		return azTypeError(field, "an object")
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return azSyntaxError(err)
		}
		if err := member(name.String()); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return azSyntaxError(err)
	}
	return nil
}

// readString reads a string value; null is "".
func readString(dec *jsontext.Decoder, field string) (string, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return "", azSyntaxError(err)
	}
	switch tok.Kind() {
	case '"':
		return tok.String(), nil
	case 'n':
		return "", nil
	default:
		return "", azTypeError(field, "a string")
	}
}

func skipValue(dec *jsontext.Decoder) error {
	if err := dec.SkipValue(); err != nil {
		return azSyntaxError(err)
	}
	return nil
}

// readAzEntity reads a subject or resource; withProps keeps its
// properties as a Cedar record (a subject's are skipped: ignored).
func readAzEntity(dec *jsontext.Decoder, field string, withProps bool) (*azEntityValue, error) {
	if dec.PeekKind() == 'n' {
		return nil, skipValue(dec)
	}
	e := &azEntityValue{}
	err := readObject(dec, field, func(name string) error {
		var err error
		switch name {
		case "type":
			e.typ, err = readString(dec, field+".type")
		case "id":
			e.id, err = readString(dec, field+".id")
		case "properties":
			if !withProps || dec.PeekKind() == 'n' {
				return skipValue(dec)
			}
			if dec.PeekKind() != '{' {
				_ = dec.SkipValue()
				return azTypeError(field+".properties", "an object of Cedar JSON values")
			}
			e.props, err = readCedarRecord(dec, field+".properties")
			e.hasProps = true
		default:
			return skipValue(dec)
		}
		return err
	})
	return e, err
}

// readAzAction reads an action; its properties are ignored.
func readAzAction(dec *jsontext.Decoder, field string) (*string, error) {
	if dec.PeekKind() == 'n' {
		return nil, skipValue(dec)
	}
	var name string
	err := readObject(dec, field, func(member string) error {
		if member != "name" {
			return skipValue(dec)
		}
		var err error
		name, err = readString(dec, field+".name")
		return err
	})
	return &name, err
}

// readAzContext reads a context object (null: none).
func readAzContext(dec *jsontext.Decoder, field string) (cedar.RecordMap, error) {
	switch dec.PeekKind() {
	case 'n':
		return nil, skipValue(dec)
	case '{':
		m, escaped, err := readCedarMembers(dec, field)
		if err == nil && escaped != nil {
			err = azTypeError(field, "an object of Cedar JSON values")
		}
		return m, err
	default:
		_ = dec.SkipValue()
		return nil, azTypeError(field, "an object of Cedar JSON values")
	}
}

// readEvaluationMember reads one member of an evaluation (or of a batch's
// defaults) into ev; it reports false for a member it does not know.
func readEvaluationMember(dec *jsontext.Decoder, prefix, name string, ev *azEval) (bool, error) {
	var err error
	switch name {
	case "subject":
		ev.subject, err = readAzEntity(dec, prefix+"subject", false)
	case "resource":
		ev.resource, err = readAzEntity(dec, prefix+"resource", true)
	case "action":
		ev.action, err = readAzAction(dec, prefix+"action")
	case "context":
		ev.context, err = readAzContext(dec, prefix+"context")
		ev.hasContext = true
	default:
		return false, nil
	}
	return true, err
}

// readCedarRecord reads an object of Cedar JSON values (the schemaless
// rules of cedar-go: strings, booleans, 64-bit integers, arrays as sets,
// objects as records, {"__entity": ...} and {"__extn": ...} escapes).
func readCedarRecord(dec *jsontext.Decoder, field string) (cedar.Record, error) {
	v, err := readCedarValue(dec, field)
	if err != nil {
		return cedar.Record{}, err
	}
	rec, ok := v.(cedar.Record)
	if !ok {
		return cedar.Record{}, azTypeError(field, "an object of Cedar JSON values")
	}
	return rec, nil
}

func readCedarValue(dec *jsontext.Decoder, field string) (cedar.Value, error) {
	switch dec.PeekKind() {
	case '{':
		return readCedarObject(dec, field)
	case '[':
		if _, err := dec.ReadToken(); err != nil {
			return nil, azSyntaxError(err)
		}
		var vals []cedar.Value
		for dec.PeekKind() != ']' {
			v, err := readCedarValue(dec, field+"[]")
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, azSyntaxError(err)
		}
		return cedar.NewSet(vals...), nil
	case '0':
		raw, err := dec.ReadValue()
		if err != nil {
			return nil, azSyntaxError(err)
		}
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || string(raw) == "-0" { // cedar-go refuses -0 too
			return nil, azTypeError(field, "a 64-bit integer (Cedar has no other numbers)")
		}
		return cedar.Long(n), nil
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, azSyntaxError(err)
		}
		return cedar.String(tok.String()), nil
	case 't', 'f':
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, azSyntaxError(err)
		}
		return cedar.Boolean(tok.Bool()), nil
	case 'n':
		_ = dec.SkipValue()
		return nil, azTypeError(field, "a Cedar value, not null")
	default:
		_, err := dec.ReadToken()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, azSyntaxError(err)
	}
}

// readCedarObject reads an object as a Cedar record, or as the entity
// reference or extension value that an object whose only member is
// "__entity" or "__extn" escapes (decoded by cedar-go's own rules).
func readCedarObject(dec *jsontext.Decoder, field string) (cedar.Value, error) {
	m, escaped, err := readCedarMembers(dec, field)
	if err != nil || escaped != nil {
		return escaped, err
	}
	return cedar.NewRecord(m), nil
}

// readCedarMembers reads an object's members as Cedar values, or, for an
// escape object, its value.
func readCedarMembers(dec *jsontext.Decoder, field string) (cedar.RecordMap, cedar.Value, error) {
	if _, err := dec.ReadToken(); err != nil {
		return nil, nil, azSyntaxError(err)
	}
	m := cedar.RecordMap{}
	for first := true; dec.PeekKind() != '}'; first = false {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, nil, azSyntaxError(err)
		}
		name := tok.String()
		if name == "__entity" || name == "__extn" {
			val, err := dec.ReadValue()
			if err != nil {
				return nil, nil, azSyntaxError(err)
			}
			raw := bytes.Clone(val) // val is only valid until the next read
			var v cedar.Value
			if first && dec.PeekKind() == '}' {
				// The escape: {"__entity": {...}} or {"__extn": {...}}.
				escaped := append(append(append([]byte(`{"`), name...), `":`...), raw...)
				escaped = append(escaped, '}')
				err = types.UnmarshalJSON(escaped, &v)
			} else {
				err = types.UnmarshalJSON(raw, &v)
			}
			if err != nil {
				return nil, nil, azTypeError(field, "Cedar JSON")
			}
			if first && dec.PeekKind() == '}' {
				if _, err := dec.ReadToken(); err != nil {
					return nil, nil, azSyntaxError(err)
				}
				return nil, v, nil
			}
			m[cedar.String(name)] = v
			continue
		}
		v, err := readCedarValue(dec, field+"."+clipDecisionEcho(name))
		if err != nil {
			return nil, nil, err
		}
		m[cedar.String(name)] = v
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, nil, azSyntaxError(err)
	}
	return m, nil, nil
}
