package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/gateway/validate"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// Log attribute keys.
const (
	logKeyRequestID = "request_id"
	logKeyRoute     = "route"
	logKeyReason    = "reason"
	logKeyStatus    = "status"
	logKeyRemote    = "remote_ip"
	logKeyError     = "error"
	logKeyService   = "service"
	logKeyPeer      = "peer"
	logKeyBreaker   = "breaker"
	logKeyFrom      = "from"
	logKeyTo        = "to"
	logKeyHeaders   = "headers"
	logKeyRules     = "rules"
)

// Error codes of the gateway's refusals, besides httpapi's.
const (
	CodeRateLimited       = ratelimit.CodeRateLimited
	CodeInvalidToken      = "invalid_token"
	CodeInsufficientScope = "insufficient_scope"
	CodeForbidden         = "forbidden"
	CodeRequestBlocked    = "request_blocked"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeBadGateway        = "bad_gateway"
)

// Span attribute keys: the request's security context, never a token.
const (
	attrPrincipal = "bulwark.principal"
	attrClient    = "bulwark.client"
	attrRoute     = "bulwark.route"
	attrDecision  = "bulwark.decision"
	attrPolicies  = "bulwark.policies"
	attrRemaining = "bulwark.ratelimit.remaining"
)

// ctxKey keys the forwarding data the proxy's rewrite reads.
type ctxKey int

const forwardKey ctxKey = iota

// forwardInfo is what the rewrite of one proxied request needs.
type forwardInfo struct {
	path  string
	token string
}

// serve runs the request pipeline; see the package documentation for the
// order of the checks.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	st := &reqState{start: g.deps.Now(), method: r.Method, path: r.URL.Path, remoteIP: remoteIP(r.RemoteAddr)}
	st.requestID, st.trace = correlation.Ensure(r.Header)
	ctx, span := g.startSpan(r.Context(), r, st)
	defer span.End()
	r = r.WithContext(ctx)
	w.Header().Set(correlation.HeaderRequestID, st.requestID)
	sw := &statusWriter{ResponseWriter: w, requestID: st.requestID}
	defer func() {
		route := "none"
		if st.route != nil {
			route = st.route.Name
		}
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		g.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		g.metrics.duration.WithLabelValues(route).Observe(g.deps.Now().Sub(st.start).Seconds())
	}()
	g.pipeline(sw, r, st, span)
}

func (g *Gateway) pipeline(w *statusWriter, r *http.Request, st *reqState, span trace.Span) {
	ctx := r.Context()
	// Hop-by-hop headers (Connection: keep-alive...) are removed silently;
	// identity and forwarding headers a client set are an attack signal.
	if stripped := validate.SanitizeHeaders(r.Header); len(stripped) > 0 && identityHeaders(stripped) {
		g.metrics.stripped.Inc()
		g.logger.Warn("gateway stripped client-set headers", logKeyRequestID, st.requestID, logKeyRemote, st.remoteIP, logKeyHeaders, stripped)
		ev := g.apiEvent(st, audit.StatusFailure, DetailHeadersStripped)
		ev.SeverityID = severityMedium
		ev.Unmapped["stripped_headers"] = stripped
		g.send(ctx, ev)
	}
	// Correlation headers were validated by Ensure and rewritten; keep them.
	r.Header.Set(correlation.HeaderRequestID, st.requestID)

	// Route: the escaped path must be canonical, so that what is matched
	// is what the upstream receives.
	if !canonicalPath(r.URL) {
		g.refuse(w, r, st, http.StatusBadRequest, httpapi.CodeInvalidRequest, "the request path is not canonical", DetailBadPath, nil)
		return
	}
	route, allowed := g.routes.Match(r.Method, r.URL.Path)
	if route == nil {
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			g.refuse(w, r, st, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed", DetailMethodNotAllowed, nil)
			return
		}
		g.refuse(w, r, st, http.StatusNotFound, httpapi.CodeNotFound, "no such route", DetailNotFound, nil)
		return
	}
	st.route = route
	span.SetAttributes(attribute.String(attrRoute, route.Name))

	// Per-IP limit, before any work on the token.
	if !g.limit(w, r, st, span, g.deps.Limiters.IP, ratelimit.IPKeyFromRemoteAddr, "ip") {
		return
	}

	// Authentication.
	p, err := g.deps.Verifier.VerifyRequest(r)
	if err != nil {
		g.refuseAuth(w, r, st, err)
		return
	}
	st.principal = p
	user := p.IsUser()
	span.SetAttributes(attribute.String(attrClient, p.ClientID), attribute.String(attrPrincipal, principalUID(p).String()))

	// Per-client and per-user limits.
	if !g.limit(w, r, st, span, g.deps.Limiters.Client, func(string) (string, error) { return ratelimit.ClientKey(p.ClientID), nil }, "client") {
		return
	}
	if user && !g.limit(w, r, st, span, g.deps.Limiters.User, func(string) (string, error) { return ratelimit.UserKey(p.Subject), nil }, "user") {
		return
	}

	// Scopes.
	for _, s := range route.Scopes {
		if !p.HasScope(s) {
			scheme := "Bearer"
			if p.Confirmation.JKT != "" {
				scheme = "DPoP"
			}
			w.Header().Set("WWW-Authenticate", scheme+` error="insufficient_scope", scope="`+strings.Join(route.Scopes, " ")+`"`)
			span.SetAttributes(attribute.String(attrDecision, "deny"))
			g.refuse(w, r, st, http.StatusForbidden, CodeInsufficientScope, "the token lacks a scope this route requires", DetailInsufficientScope, nil)
			return
		}
	}

	// Cedar.
	d := g.decide(r, route, p)
	st.reasons = d.Reasons
	span.SetAttributes(attribute.StringSlice(attrPolicies, d.Reasons))
	if !d.Allowed {
		span.SetAttributes(attribute.String(attrDecision, "deny"))
		g.refuse(w, r, st, http.StatusForbidden, CodeForbidden, "access denied", DetailDenied, func(ev *audit.Event) {
			if d.Refusal != "" {
				ev.Unmapped["refusal"] = d.Refusal
			}
			if len(d.Errors) > 0 {
				ev.Unmapped["policy_errors"] = d.Errors
			}
			ev.Unmapped["bundle_version"] = d.BundleVersion
		})
		return
	}
	span.SetAttributes(attribute.String(attrDecision, "allow"))

	// Body and OpenAPI.
	upstreamPath := route.rewrite(r.URL.Path)
	body, ok := g.readBody(w, r, st, route)
	if !ok {
		return
	}

	// WAF.
	if eng := g.wafs[route.WAF]; eng != nil {
		v, err := eng.check(r, body)
		if err != nil {
			g.logger.Error("gateway waf failed", logKeyRequestID, st.requestID, logKeyError, err)
			g.refuse(w, r, st, http.StatusInternalServerError, httpapi.CodeInternal, "internal error", DetailWAFError, nil)
			return
		}
		if v.Matched {
			withRules := func(ev *audit.Event) {
				ev.SeverityID = severityHigh
				ev.Unmapped["waf_rules"] = v.Rules
				ev.Unmapped["waf_mode"] = string(route.WAF)
			}
			if route.WAF == WAFBlock {
				g.refuse(w, r, st, http.StatusForbidden, CodeRequestBlocked, "request blocked", DetailWAFBlocked, withRules)
				return
			}
			g.logger.Warn("gateway waf detected an attack pattern", logKeyRequestID, st.requestID, logKeyRoute, route.Name, logKeyRules, v.Rules)
			ev := g.apiEvent(st, audit.StatusSuccess, DetailWAFDetected)
			withRules(ev)
			g.send(ctx, ev)
		}
	}

	// Destination and internal token.
	id, endpoints, err := g.deps.Resolver.Resolve(ctx, route.Service)
	if err != nil || len(endpoints) == 0 {
		detail := DetailDirectoryDown
		if errors.Is(err, mesh.ErrUnknownService) {
			detail = DetailUnknownService
		}
		g.logger.Error("gateway could not resolve service", logKeyRequestID, st.requestID, logKeyService, route.Service, logKeyError, err)
		w.Header().Set("Retry-After", "5")
		g.refuse(w, r, st, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "service unavailable", detail, nil)
		return
	}
	token, _ := presentedToken(r.Header)
	internal, _, err := g.deps.Exchanger.Exchange(ctx, token, id.String())
	if err != nil {
		g.logger.Error("gateway token exchange failed", logKeyRequestID, st.requestID, logKeyService, route.Service, logKeyError, err)
		w.Header().Set("Retry-After", "5")
		g.refuse(w, r, st, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "service unavailable", DetailExchangeFailed, nil)
		return
	}
	g.proxy(w, r, st, route, id, endpoints, upstreamPath, internal, body)
}

// proxy forwards the request to the route's pool and audits failures (and
// every request when AuditAllowed).
func (g *Gateway) proxy(w *statusWriter, r *http.Request, st *reqState, route *Route, id spiffeid.ID, endpoints []string, upstreamPath, internal string, body []byte) {
	h, err := g.upstreams.handler(route, id, normalizeEndpoints(endpoints), g.rewrite)
	if err != nil {
		g.logger.Error("gateway upstream pool", logKeyRequestID, st.requestID, logKeyService, route.Service, logKeyError, err)
		g.refuse(w, r, st, http.StatusBadGateway, CodeBadGateway, "bad gateway", DetailUpstreamFailed, nil)
		return
	}
	out := r.Clone(context.WithValue(r.Context(), forwardKey, &forwardInfo{path: upstreamPath, token: internal}))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(body) == 0 && r.ContentLength <= 0 {
		out.Body = http.NoBody
	}
	h.ServeHTTP(w, out)
	st.status = w.code()
	if st.status >= 500 {
		g.metrics.refusals.WithLabelValues(DetailUpstreamFailed).Inc()
		g.logger.Warn("gateway upstream failed", logKeyRequestID, st.requestID, logKeyRoute, route.Name, logKeyStatus, st.status)
		g.send(r.Context(), g.apiEvent(st, audit.StatusFailure, DetailUpstreamFailed))
		return
	}
	if g.routes.AuditAllowed {
		g.send(r.Context(), g.apiEvent(st, audit.StatusSuccess, DetailAllowed))
	}
}

// rewrite shapes the request sent to the upstream agent: the rewritten path,
// the internal token in place of the caller's credentials, and the
// correlation headers (already in the inbound request's headers).
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	fi, _ := pr.In.Context().Value(forwardKey).(*forwardInfo)
	if fi == nil {
		// Never forward without an internal token.
		pr.Out.Header.Del("Authorization")
		return
	}
	pr.Out.URL.Path, pr.Out.URL.RawPath = fi.path, ""
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	pr.Out.Host = ""
	pr.Out.Header.Del("DPoP")
	pr.Out.Header.Set("Authorization", "Bearer "+fi.token)
}

// readBody reads the body within the route's limit and, for a route with an
// OpenAPI document, validates the request against it.
func (g *Gateway) readBody(w *statusWriter, r *http.Request, st *reqState, route *Route) ([]byte, bool) {
	if r.ContentLength > route.MaxBodyBytes {
		g.refuse(w, r, st, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body too large", DetailInvalidRequest, nil)
		return nil, false
	}
	in := r
	if route.validator != nil {
		// The document describes the public API: the path as the client
		// sent it, before any upstream_path rewrite.
		checked, err := route.validator.Check(r)
		if err != nil {
			var ve *validate.Error
			if !errors.As(err, &ve) {
				ve = &validate.Error{Status: http.StatusBadRequest, Code: httpapi.CodeInvalidRequest, Message: "invalid request"}
			}
			if len(ve.Allow) > 0 {
				w.Header().Set("Allow", strings.Join(ve.Allow, ", "))
			}
			g.refuse(w, r, st, ve.Status, ve.Code, ve.Message, DetailInvalidRequest, nil)
			return nil, false
		}
		in = checked
	}
	if in.Body == nil || in.Body == http.NoBody {
		return nil, true
	}
	body, err := io.ReadAll(io.LimitReader(in.Body, route.MaxBodyBytes+1))
	if err != nil {
		g.refuse(w, r, st, http.StatusBadRequest, httpapi.CodeInvalidRequest, "the request body could not be read", DetailInvalidRequest, nil)
		return nil, false
	}
	if int64(len(body)) > route.MaxBodyBytes {
		g.refuse(w, r, st, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body too large", DetailInvalidRequest, nil)
		return nil, false
	}
	return body, true
}

// limit applies limiter to the request; it answers and audits a refusal and
// reports whether the request may go on.
func (g *Gateway) limit(w *statusWriter, r *http.Request, st *reqState, span trace.Span, limiter ratelimit.Limiter, key func(string) (string, error), name string) bool {
	k, err := key(r.RemoteAddr)
	var res ratelimit.Result
	if err == nil {
		res, err = limiter.Allow(r.Context(), k)
	}
	if err != nil {
		g.logger.Error("gateway rate limiter failed", logKeyRequestID, st.requestID, logKeyReason, name, logKeyError, err)
		g.refuse(w, r, st, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "service unavailable", DetailRateLimitError, nil)
		return false
	}
	span.SetAttributes(attribute.Int(attrRemaining, res.Remaining))
	if res.Allowed {
		return true
	}
	w.Header().Set("Retry-After", ratelimit.RetryAfterSeconds(res.RetryAfter))
	g.refuse(w, r, st, http.StatusTooManyRequests, CodeRateLimited, "too many requests", DetailRateLimited, func(ev *audit.Event) {
		ev.Unmapped["rate_limit"] = name
	})
	return false
}

// refuseAuth answers a failed authentication with 401 and a challenge
// (400 for a malformed Authorization header), and audits it as an
// Authentication failure.
func (g *Gateway) refuseAuth(w *statusWriter, r *http.Request, st *reqState, err error) {
	var ae *authn.Error
	if !errors.As(err, &ae) {
		ae = &authn.Error{Reason: authn.ReasonMalformed}
	}
	status, code, msg := http.StatusUnauthorized, CodeInvalidToken, "the access token is missing or invalid"
	challenge := `Bearer error="invalid_token"`
	switch ae.Reason {
	case authn.ReasonMissingToken:
		code, challenge = httpapi.CodeUnauthenticated, `Bearer, DPoP algs="EdDSA ES256 PS256"`
		msg = "an access token is required"
	case authn.ReasonInvalidRequest:
		status, code, challenge = http.StatusBadRequest, httpapi.CodeInvalidRequest, `Bearer error="invalid_request"`
		msg = "the Authorization header is malformed"
	case authn.ReasonDPoPInvalid, authn.ReasonDPoPReplay:
		challenge = `DPoP error="invalid_dpop_proof", algs="EdDSA ES256 PS256"`
	default:
		if ae.Scheme == "DPoP" || ae.Reason == authn.ReasonDPoPRequired {
			challenge = `DPoP error="invalid_token", algs="EdDSA ES256 PS256"`
		}
	}
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Cache-Control", "no-store")
	st.status = status
	g.count(st, ae.Reason)
	g.logger.Warn("gateway refused a request", logKeyRequestID, st.requestID, logKeyRoute, st.route.Name, logKeyReason, ae.Reason, logKeyStatus, status, logKeyRemote, st.remoteIP)
	g.writeError(w, st, status, code, msg)
	g.send(r.Context(), g.authEvent(st, ae.Reason))
}

// refuse answers an error, logs, counts and (except for unrouted requests)
// audits it; adjust, if not nil, adds to the event.
func (g *Gateway) refuse(w *statusWriter, r *http.Request, st *reqState, status int, code, msg, detail string, adjust func(*audit.Event)) {
	st.status = status
	g.count(st, detail)
	route := ""
	if st.route != nil {
		route = st.route.Name
	}
	g.logger.Warn("gateway refused a request", logKeyRequestID, st.requestID, logKeyRoute, route, logKeyReason, detail, logKeyStatus, status, logKeyRemote, st.remoteIP)
	g.writeError(w, st, status, code, msg)
	if st.route == nil {
		// Unrouted requests are only counted: scanning is noise, not a
		// security decision.
		return
	}
	ev := g.apiEvent(st, audit.StatusFailure, detail)
	if adjust != nil {
		adjust(ev)
	}
	g.send(r.Context(), ev)
}

func (g *Gateway) count(_ *reqState, reason string) {
	g.metrics.refusals.WithLabelValues(reason).Inc()
}

// writeError sends the JSON error body of the shared API error type.
func (g *Gateway) writeError(w http.ResponseWriter, st *reqState, status int, code, msg string) {
	var body httpapi.ErrorBody
	body.Error.Code, body.Error.Message, body.Error.RequestID = code, msg, st.requestID
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decide asks the policy whether the caller may do the route's action.
func (g *Gateway) decide(r *http.Request, route *Route, p *authn.Principal) authz.Decision {
	routeUID := cedar.NewEntityUID("Bulwark::Route", cedar.String(route.Name))
	entities := cedar.EntityMap{routeUID: cedar.Entity{
		UID:        routeUID,
		Attributes: cedar.NewRecord(cedar.RecordMap{"method": cedar.String(r.Method), "path": cedar.String(r.URL.Path)}),
	}}
	c := authz.Context{Zone: "public", Scopes: p.Scopes, MFA: hasMFA(p), RiskScore: 0, Time: g.deps.Now(), Hour: -1}
	return g.deps.Decider.Decide(authz.Request{
		Principal: principalUID(p),
		Action:    authz.ActionUID(route.ActionFor(r.Method)),
		Resource:  routeUID,
		Context:   c.Record(),
		Entities:  entities,
	})
}

// principalUID is the Cedar principal of a token: the user when the token
// speaks for one, else the client it speaks for — its subject, which is the
// client_id of a client's own token and the original client of an
// exchanged one.
func principalUID(p *authn.Principal) cedar.EntityUID {
	if p.IsUser() {
		return cedar.NewEntityUID("Bulwark::User", cedar.String(p.Subject))
	}
	return cedar.NewEntityUID("Bulwark::Client", cedar.String(p.Subject))
}

// hasMFA reports whether the token's amr claim names a second factor.
func hasMFA(p *authn.Principal) bool {
	amr, _ := p.Claims["amr"].([]any)
	for _, a := range amr {
		if s, _ := a.(string); s == "mfa" || s == "otp" {
			return true
		}
	}
	return false
}

// presentedToken returns the access token of an Authorization header
// ("Bearer x" or "DPoP x"), already verified by the Verifier.
func presentedToken(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || (!strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "DPoP")) {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// identityHeaders reports whether any of the stripped headers claims an
// identity (X-Bulwark-*), a forwarding chain or a client address: the attack
// signals worth an audit event, unlike plain hop-by-hop headers.
func identityHeaders(names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool {
		n = strings.ToLower(strings.ReplaceAll(n, "_", "-"))
		return strings.HasPrefix(n, "x-bulwark-") || strings.HasPrefix(n, "x-forwarded-") || n == "forwarded" ||
			n == "x-real-ip" || n == "x-client-ip" || n == "true-client-ip" || n == "x-original-url" || n == "x-rewrite-url"
	})
}

// canonicalPath reports whether u's path is absolute, clean and has no
// escaped slash, backslash or dot segments.
func canonicalPath(u *url.URL) bool {
	p := u.EscapedPath()
	if p == "" || p[0] != '/' || strings.ContainsAny(u.Path, "\\\x00") {
		return false
	}
	lower := strings.ToLower(p)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%00") {
		return false
	}
	c := path.Clean(u.Path)
	return c == u.Path || c+"/" == u.Path
}

// startSpan starts the request's server span under the caller's trace and
// makes the correlation carry the span's ids.
func (g *Gateway) startSpan(ctx context.Context, r *http.Request, st *reqState) (context.Context, trace.Span) {
	if st.trace.ParentSpanID != "" {
		var sc trace.SpanContextConfig
		tid, err1 := hex.DecodeString(st.trace.TraceID)
		sid, err2 := hex.DecodeString(st.trace.ParentSpanID)
		if err1 == nil && err2 == nil && len(tid) == 16 && len(sid) == 8 {
			copy(sc.TraceID[:], tid)
			copy(sc.SpanID[:], sid)
			sc.Remote = true
			if st.trace.Sampled {
				sc.TraceFlags = trace.FlagsSampled
			}
			ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(sc))
		}
	}
	ctx, span := g.tracer.Start(ctx, "gateway "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	// A tracer that made a span of its own names this hop; the no-op tracer
	// hands back the caller's span context, and then the span id that
	// correlation.Ensure made for this hop stays.
	if sc := span.SpanContext(); sc.IsValid() && sc.SpanID().String() != st.trace.ParentSpanID {
		st.trace.TraceID, st.trace.SpanID = sc.TraceID().String(), sc.SpanID().String()
		st.trace.Sampled = sc.IsSampled()
		r.Header.Set(correlation.HeaderTraceparent, st.trace.Traceparent())
	}
	return ctx, span
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	requestID string
	status    int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		// One X-Request-ID, the gateway's, whatever the upstream answered.
		w.Header().Set(correlation.HeaderRequestID, w.requestID)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
