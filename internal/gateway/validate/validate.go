package validate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Defaults applied to zero Config fields.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxHeaderCount = 100
	DefaultMaxHeaderBytes = 16 << 10
	DefaultMaxJSONDepth   = 32
)

// Config configures a Validator. Zero limits take the defaults above.
type Config struct {
	// Spec is the route's OpenAPI 3.0 or 3.1 document, YAML or JSON. External
	// $refs (files, URLs) are refused. The document's servers are ignored:
	// paths are matched against the request path as the gateway hands it on.
	Spec []byte
	// MaxBodyBytes bounds the request body (default 1 MiB).
	MaxBodyBytes int64
	// MaxHeaderCount bounds the number of header fields (default 100).
	MaxHeaderCount int
	// MaxHeaderBytes bounds the total size of the header fields, counted as
	// "Name: value\r\n" (default 16 KiB).
	MaxHeaderBytes int
	// MaxJSONDepth bounds the nesting of JSON bodies (default 32).
	MaxJSONDepth int
}

// Validator checks requests against one OpenAPI document. It is safe for
// concurrent use.
type Validator struct {
	cfg    Config
	router routers.Router
}

// New loads and validates cfg.Spec and builds its router.
func New(cfg Config) (*Validator, error) {
	if len(cfg.Spec) == 0 {
		return nil, errors.New("validate: config: spec is empty")
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxHeaderCount < 0 || cfg.MaxHeaderBytes < 0 || cfg.MaxJSONDepth < 0 {
		return nil, errors.New("validate: config: limits must not be negative")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxHeaderCount == 0 {
		cfg.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxJSONDepth == 0 {
		cfg.MaxJSONDepth = DefaultMaxJSONDepth
	}
	ctx := context.Background()
	loader := openapi3.NewLoader()
	loader.Context = ctx
	loader.IsExternalRefsAllowed = false
	loader.ReadFromURIFunc = nil
	doc, err := loader.LoadFromData(cfg.Spec)
	if err != nil {
		return nil, fmt.Errorf("validate: load spec: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate: invalid spec: %w", err)
	}
	if doc.Paths == nil || doc.Paths.Len() == 0 {
		return nil, errors.New("validate: spec declares no paths")
	}
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("validate: build router: %w", err)
	}
	return &Validator{cfg: cfg, router: router}, nil
}

// Check validates r: header limits, a canonical path, the route (404 when
// the path is not in the document, 405 when the method is not), query
// parameters (undeclared or repeated scalar ones are refused), the body
// (read at most MaxBodyBytes+1 bytes, 413 beyond), the content type (415),
// JSON depth and duplicate keys, then parameters and body against the
// schema. It returns a request for the upstream whose body is the exact
// bytes received, with trailers dropped. Every error is an *Error.
func (v *Validator) Check(r *http.Request) (*http.Request, error) {
	if e := v.check(r); e != nil {
		return nil, e
	}
	return v.checkBody(r)
}

func (v *Validator) check(r *http.Request) *Error {
	count, size := headerSize(r.Header)
	if count > v.cfg.MaxHeaderCount {
		return refuse(http.StatusRequestHeaderFieldsTooLarge, CodeHeadersTooLarge,
			"more than %d header fields", v.cfg.MaxHeaderCount)
	}
	if size > v.cfg.MaxHeaderBytes {
		return refuse(http.StatusRequestHeaderFieldsTooLarge, CodeHeadersTooLarge,
			"header fields larger than %d bytes", v.cfg.MaxHeaderBytes)
	}
	if r.URL == nil || !canonicalPath(r.URL) {
		return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request path is not canonical")
	}
	return nil
}

func (v *Validator) checkBody(r *http.Request) (*http.Request, error) {
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		if allow := v.allowed(r); len(allow) > 0 {
			e := refuse(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed on this path", safeName(r.Method))
			e.Allow = allow
			return nil, e
		}
		return nil, notFound()
	}
	if e := checkQuery(r.URL.RawQuery, route); e != nil {
		return nil, e
	}
	body, e := v.readBody(r)
	if e != nil {
		return nil, e
	}
	out := r.WithContext(r.Context())
	restore(out, body)

	op := route.Operation
	var mediaType string
	switch {
	case op.RequestBody == nil || op.RequestBody.Value == nil:
		if len(body) > 0 {
			return nil, refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "this operation takes no request body")
		}
	case len(body) == 0:
		if op.RequestBody.Value.Required {
			return nil, refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body is required")
		}
	default:
		cts := r.Header.Values("Content-Type")
		if len(cts) != 1 {
			return nil, refuse(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType, "exactly one Content-Type header is required")
		}
		mt, _, err := mime.ParseMediaType(cts[0])
		if err != nil || op.RequestBody.Value.Content.Get(mt) == nil {
			return nil, refuse(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType, "content type is not accepted by this operation")
		}
		if strings.Contains(mt, "yaml") {
			// kin-openapi would parse YAML bodies, aliases and all (a
			// "billion laughs" fits in a small body); the edge takes none.
			return nil, refuse(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType, "YAML request bodies are not accepted")
		}
		mediaType = mt
	}
	if isJSON(mediaType) {
		if e := scanJSON(body, v.cfg.MaxJSONDepth); e != nil {
			return nil, e
		}
	}
	input := &openapi3filter.RequestValidationInput{
		Request:    out,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// Authentication is the gateway's job, before validation.
			AuthenticationFunc:                openapi3filter.NoopAuthenticationFunc,
			SkipSettingDefaults:               true,
			RejectWhenRequestBodyNotSpecified: true,
		},
	}
	verr := openapi3filter.ValidateRequest(r.Context(), input)
	restore(out, body)
	if verr != nil {
		return nil, schemaRefusal(verr)
	}
	return out, nil
}

// allowed lists the methods the document declares for r's path (the
// router only reports 405 for paths without parameters, so ask it per
// method).
func (v *Validator) allowed(r *http.Request) []string {
	var allow []string
	probe := *r
	for _, m := range [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodTrace} {
		if m == r.Method {
			continue
		}
		probe.Method = m
		if _, _, err := v.router.FindRoute(&probe); err == nil {
			allow = append(allow, m)
		}
	}
	return allow
}

// readBody reads the body, never more than MaxBodyBytes+1 bytes.
func (v *Validator) readBody(r *http.Request) ([]byte, *Error) {
	limit := v.cfg.MaxBodyBytes
	tooLarge := refuse(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body larger than %d bytes", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body could not be read")
	}
	if int64(len(body)) > limit {
		return nil, tooLarge
	}
	return body, nil
}

// restore gives r a fresh reader over body and the matching framing.
func restore(r *http.Request, body []byte) {
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Trailer = nil
	if len(body) == 0 {
		r.Body, r.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// canonicalPath refuses paths that a router and an upstream could read
// differently: dot segments, doubled slashes, encoded slashes or
// backslashes, and control characters.
func canonicalPath(u *url.URL) bool {
	p := u.Path
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	raw := strings.ToLower(u.RawPath)
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") {
		return false
	}
	clean := path.Clean(p)
	return clean == p || (strings.HasSuffix(p, "/") && clean+"/" == p)
}

// checkQuery refuses a malformed query string, parameters the operation
// does not declare, and a scalar parameter given more than once (HTTP
// parameter pollution: the validator and the upstream could each read a
// different copy).
func checkQuery(rawQuery string, route *routers.Route) *Error {
	if rawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "malformed query string")
	}
	declared := map[string]*openapi3.Parameter{}
	for _, params := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, ref := range params {
			if ref != nil && ref.Value != nil && ref.Value.In == openapi3.ParameterInQuery {
				declared[ref.Value.Name] = ref.Value
			}
		}
	}
	for name, values := range q {
		p, ok := declared[name]
		if !ok {
			return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "unknown query parameter %q", safeName(name))
		}
		if len(values) > 1 && !isArrayParam(p) {
			return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "query parameter %q given more than once", safeName(name))
		}
	}
	return nil
}

func isArrayParam(p *openapi3.Parameter) bool {
	return p.Schema != nil && p.Schema.Value != nil && p.Schema.Value.Type.Is(openapi3.TypeArray)
}

func isJSON(mediaType string) bool {
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// schemaRefusal turns a kin-openapi error into a safe refusal that names the
// parameter or body field and the violated constraint, never the value,
// the body or the validator's own wording.
func schemaRefusal(err error) *Error {
	var se *openapi3.SchemaError
	hasSchema := errors.As(err, &se)
	constraint := ""
	if hasSchema && se.SchemaField != "" {
		constraint = " (" + safeName(se.SchemaField) + ")"
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		if p := re.Parameter; p != nil {
			return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "invalid %s parameter %q%s",
				safeName(p.In), safeName(p.Name), constraint)
		}
		if re.RequestBody != nil {
			if hasSchema {
				field := fieldPointer(se)
				switch {
				case se.SchemaField == "required":
					return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body field %q is required", field)
				case strings.HasSuffix(se.Reason, "is unsupported"):
					return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body field %q is not allowed", field)
				}
				return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body field %q is invalid%s",
					field, constraint)
			}
			return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request body does not match the schema")
		}
	}
	return refuse(http.StatusBadRequest, httpapi.CodeInvalidRequest, "request does not match the API schema")
}

// fieldPointer is the JSON pointer of the failing field; for a missing or
// unsupported property it names that property.
func fieldPointer(se *openapi3.SchemaError) string {
	parts := se.JSONPointer()
	if name, ok := propertyInReason(se.Reason); ok && (len(parts) == 0 || parts[len(parts)-1] != name) {
		parts = append(parts, name)
	}
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~", "~0"), "/", "~1")
	}
	return safeName("/" + strings.Join(parts, "/"))
}

// propertyInReason extracts the property name from kin-openapi's
// `property "x" is missing` / `property "x" is unsupported` reasons.
func propertyInReason(reason string) (string, bool) {
	const prefix = `property "`
	i := strings.Index(reason, prefix)
	if i < 0 {
		return "", false
	}
	rest := reason[i+len(prefix):]
	j := strings.Index(rest, `"`)
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}
