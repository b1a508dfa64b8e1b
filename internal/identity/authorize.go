package identity

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
)

// authzRequest is a validated authorization request: what a pushed
// authorization request stores (identity_par.params) and what a login
// session carries (identity_login_sessions.request).
type authzRequest struct {
	ClientID            string   `json:"client_id"`
	RedirectURI         string   `json:"redirect_uri"`
	Scopes              []string `json:"scopes"`
	Audiences           []string `json:"audiences"`
	State               string   `json:"state,omitempty"`
	Nonce               string   `json:"nonce,omitempty"`
	CodeChallenge       string   `json:"code_challenge"`
	CodeChallengeMethod string   `json:"code_challenge_method"`
	DPoPJKT             string   `json:"dpop_jkt,omitempty"`
}

// Limits on authorization request parameters.
const (
	maxFormBytes = 64 << 10
	maxStateLen  = 1024
	maxNonceLen  = 512
	maxScopeLen  = 4096
	// parURNPrefix starts every request_uri this server issues (RFC 9126 §2.2).
	parURNPrefix = "urn:ietf:params:oauth:request_uri:"
)

// errRequestNotSupported refuses the "request" parameter (OIDC Core
// §3.1.2.6): request objects are not supported; PAR is.
var errRequestNotSupported = &Error{Code: "request_not_supported", Status: http.StatusBadRequest}

// validS256 matches an S256 code challenge or a JWK SHA-256 thumbprint:
// 32 bytes, base64url without padding.
var validS256 = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// repeatable parameters may appear more than once (RFC 8707 §2).
var repeatable = map[string]bool{"resource": true}

// safeDesc makes untrusted text fit an error_description (RFC 6749
// §4.1.2.1: printable ASCII without '"' and '\'), at most 64 bytes.
func safeDesc(s string) string {
	b := make([]byte, 0, min(len(s), 64))
	for i := 0; i < len(s) && len(b) < 64; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

// checkDuplicates refuses parameters given more than once (RFC 6749 §3.1).
func checkDuplicates(form url.Values) error {
	for k, v := range form {
		if len(v) > 1 && !repeatable[k] {
			return ErrInvalidRequest.WithDescription("parameter '%s' is given more than once", safeDesc(k))
		}
	}
	return nil
}

// parseAuthorizeParams validates the parameters of an authorization
// request from client c, as the authorization endpoint and the PAR
// endpoint both need. Errors are *Error values to return to the client.
func parseAuthorizeParams(form url.Values, c *Client) (*authzRequest, error) {
	if err := checkDuplicates(form); err != nil {
		return nil, err
	}
	if form.Has("request") {
		return nil, errRequestNotSupported.WithDescription("request objects are not supported; push the parameters with PAR")
	}
	if id := form.Get("client_id"); id != "" && id != c.ID {
		return nil, ErrInvalidRequest.WithDescription("client_id does not match the authenticated client")
	}
	req := &authzRequest{ClientID: c.ID, RedirectURI: form.Get("redirect_uri")}
	if req.RedirectURI == "" {
		return nil, ErrInvalidRequest.WithDescription("redirect_uri is required")
	}
	if !slices.Contains(c.RedirectURIs, req.RedirectURI) {
		return nil, ErrInvalidRequest.WithDescription("redirect_uri is not registered for this client")
	}
	switch rt := form.Get("response_type"); rt {
	case "code":
	case "":
		return nil, ErrInvalidRequest.WithDescription("response_type is required")
	default:
		return nil, ErrUnsupportedResponseType.WithDescription("only response_type=code is supported")
	}
	if rm := form.Get("response_mode"); rm != "" && rm != "query" {
		return nil, ErrInvalidRequest.WithDescription("only response_mode=query is supported")
	}
	if !c.AllowsGrant(GrantAuthorizationCode) {
		return nil, ErrUnauthorizedClient.WithDescription("the client may not use the authorization code grant")
	}
	scope := form.Get("scope")
	if len(scope) > maxScopeLen {
		return nil, ErrInvalidScope.WithDescription("scope is longer than %d bytes", maxScopeLen)
	}
	req.Scopes = splitScope(scope)
	for _, sc := range req.Scopes {
		if !validScope.MatchString(sc) || !slices.Contains(c.Scopes, sc) {
			return nil, ErrInvalidScope.WithDescription("scope '%s' is not allowed for this client", safeDesc(sc))
		}
	}
	if req.Scopes == nil {
		req.Scopes = []string{}
	}
	res := form["resource"]
	if len(res) > maxAudiences {
		return nil, ErrInvalidTarget.WithDescription("at most %d resource parameters", maxAudiences)
	}
	for _, a := range res {
		if !slices.Contains(c.Audiences, a) {
			return nil, ErrInvalidTarget.WithDescription("resource '%s' is not allowed for this client", safeDesc(a))
		}
		if !slices.Contains(req.Audiences, a) {
			req.Audiences = append(req.Audiences, a)
		}
	}
	if len(req.Audiences) == 0 {
		req.Audiences = []string{c.Audiences[0]}
	}
	req.CodeChallenge, req.CodeChallengeMethod = form.Get("code_challenge"), form.Get("code_challenge_method")
	switch {
	case req.CodeChallenge == "":
		return nil, ErrInvalidRequest.WithDescription("code_challenge is required (PKCE)")
	case req.CodeChallengeMethod != "S256":
		return nil, ErrInvalidRequest.WithDescription("code_challenge_method must be S256")
	case !validS256.MatchString(req.CodeChallenge):
		return nil, ErrInvalidRequest.WithDescription("code_challenge must be a base64url SHA-256 (43 characters)")
	}
	req.State, req.Nonce = form.Get("state"), form.Get("nonce")
	if len(req.State) > maxStateLen || !utf8.ValidString(req.State) {
		return nil, ErrInvalidRequest.WithDescription("state must be UTF-8 of at most %d bytes", maxStateLen)
	}
	if len(req.Nonce) > maxNonceLen || !utf8.ValidString(req.Nonce) {
		return nil, ErrInvalidRequest.WithDescription("nonce must be UTF-8 of at most %d bytes", maxNonceLen)
	}
	if req.DPoPJKT = form.Get("dpop_jkt"); req.DPoPJKT != "" && !validS256.MatchString(req.DPoPJKT) {
		return nil, ErrInvalidRequest.WithDescription("dpop_jkt must be a base64url SHA-256 JWK thumbprint")
	}
	if p := form.Get("prompt"); p != "" {
		values := strings.Fields(p)
		for _, v := range values {
			if !slices.Contains([]string{"none", "login", "consent", "select_account"}, v) {
				return nil, ErrInvalidRequest.WithDescription("unknown prompt value '%s'", safeDesc(v))
			}
		}
		if slices.Contains(values, "none") {
			if len(values) > 1 {
				return nil, ErrInvalidRequest.WithDescription("prompt=none cannot be combined with other values")
			}
			return nil, ErrLoginRequired.WithDescription("this server always asks the user to log in")
		}
	}
	return req, nil
}

// echoState returns the request's state when it is fit to send back in an
// error redirect, or "".
func echoState(form url.Values) string {
	st := form["state"]
	if len(st) != 1 || len(st[0]) > maxStateLen || !utf8.ValidString(st[0]) {
		return ""
	}
	return st[0]
}

// readParams returns the parameters of a GET (its query) or of a POST
// (its application/x-www-form-urlencoded body, at most 64 KiB).
func readParams(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		form, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, ErrInvalidRequest.WithDescription("the query string is malformed")
		}
		return form, nil
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, ErrInvalidRequest.WithDescription("the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, ErrInvalidRequest.WithDescription("the body exceeds %d bytes", maxFormBytes)
		}
		return nil, ErrInvalidRequest.WithDescription("the body could not be read").WithCause(err)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrInvalidRequest.WithDescription("the body is not a valid form")
	}
	return form, nil
}

func (s *Server) registerAuthorize(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathAuthorize, s.authorize)
	mux.HandleFunc("POST "+PathAuthorize, s.authorize)
	mux.HandleFunc("POST "+PathPAR, s.par)
	mux.HandleFunc("POST "+pathLogin, s.loginPassword)
	mux.HandleFunc("POST "+pathLoginTOTP, s.loginTOTP)
	mux.HandleFunc("POST "+pathConsent, s.loginConsent)
	mux.HandleFunc("GET "+pathStylesheet, serveStylesheet)
}

// authorize is the authorization endpoint. Until the client and its
// redirect URI are established, every error is an HTML page: nothing
// redirects to a URI that is not registered. After that, errors go back
// to the client as redirects carrying iss (RFC 9207).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	form, err := readParams(w, r)
	if err != nil {
		s.authorizeErrorPage(w, r, err)
		return
	}
	ids := form["client_id"]
	if len(ids) != 1 || ids[0] == "" {
		s.authorizeErrorPage(w, r, ErrInvalidRequest.WithDescription("client_id is required, once"))
		return
	}
	c, err := s.clients.get(ctx, ids[0])
	if errors.Is(err, ErrClientNotFound) {
		s.authorizeErrorPage(w, r, ErrInvalidClient.WithDescription("the client is unknown or disabled"))
		return
	}
	if err != nil {
		s.authorizeErrorPage(w, r, fmt.Errorf("authorize: %w", err))
		return
	}
	var req *authzRequest
	if uris := form["request_uri"]; len(uris) > 0 {
		// FAPI 2.0 §5.3.2.2: only the pushed parameters count.
		if len(uris) > 1 {
			s.authorizeErrorPage(w, r, ErrInvalidRequest.WithDescription("request_uri is given more than once"))
			return
		}
		if req, err = s.consumePAR(ctx, c.ID, uris[0]); err != nil {
			s.authorizeErrorPage(w, r, err)
			return
		}
	} else {
		redirects := form["redirect_uri"]
		if len(redirects) != 1 || !slices.Contains(c.RedirectURIs, redirects[0]) {
			s.authorizeErrorPage(w, r, ErrInvalidRequest.WithDescription("redirect_uri is missing or not registered for this client"))
			return
		}
		if c.RequirePAR {
			s.redirectError(w, r, redirects[0], echoState(form),
				ErrInvalidRequest.WithDescription("this client must use pushed authorization requests (PAR)"))
			return
		}
		if req, err = parseAuthorizeParams(form, c); err != nil {
			s.redirectError(w, r, redirects[0], echoState(form), err)
			return
		}
	}
	s.startLogin(w, r, c, req)
}

// errPARUnusable covers every reason a request_uri cannot be used; one
// answer for all so that request URIs cannot be probed.
var errPARUnusable = ErrInvalidRequestURI.WithDescription("the request_uri is unknown, expired, already used or issued to another client")

// consumePAR redeems a pushed request for client clientID, exactly once:
// the row is marked used in the same statement that checks that it is
// unused, unexpired and the client's.
func (s *Server) consumePAR(ctx context.Context, clientID, requestURI string) (*authzRequest, error) {
	random, ok := strings.CutPrefix(requestURI, parURNPrefix)
	if !ok || len(random) != 43 {
		return nil, errPARUnusable
	}
	h, now := hashSecret(random), s.now().UnixMilli()
	var params string
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE identity_par SET used_at = ? WHERE request_hash = ? AND client_id = ? AND used_at IS NULL AND expires_at > ?",
			now, h, clientID, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errPARUnusable
		}
		return tx.QueryRowContext(ctx, "SELECT params FROM identity_par WHERE request_hash = ?", h).Scan(&params)
	})
	if errors.Is(err, errPARUnusable) || errors.Is(err, sql.ErrNoRows) {
		return nil, errPARUnusable
	}
	if err != nil {
		return nil, fmt.Errorf("redeem pushed request: %w", err)
	}
	var req authzRequest
	if err := json.Unmarshal([]byte(params), &req); err != nil {
		return nil, fmt.Errorf("decode pushed request: %w", err)
	}
	if req.ClientID != clientID {
		return nil, errPARUnusable
	}
	return &req, nil
}

// authorizeErrorPage answers an authorization request that cannot be
// redirected with an HTML error page.
func (s *Server) authorizeErrorPage(w http.ResponseWriter, r *http.Request, err error) {
	var oe *Error
	if !errors.As(err, &oe) {
		s.log.ErrorContext(r.Context(), "authorization request failed", "path", r.URL.Path, "error", err)
		oe = ErrServerError.WithDescription("the request could not be completed")
	}
	s.metrics.tokenErrors.WithLabelValues("authorize", oe.Code).Inc()
	status := oe.Status
	if status < 500 {
		status = http.StatusBadRequest
	}
	s.renderError(w, r, status, oe.Code, oe.Description)
}

// redirectError sends an error back to the client's (registered)
// redirect URI with state and iss.
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state string, err error) {
	var oe *Error
	if !errors.As(err, &oe) {
		s.log.ErrorContext(r.Context(), "authorization request failed", "path", r.URL.Path, "error", err)
		oe = ErrServerError.WithDescription("the request could not be completed")
	}
	s.metrics.tokenErrors.WithLabelValues("authorize", oe.Code).Inc()
	q := url.Values{"error": {oe.Code}}
	if oe.Description != "" {
		q.Set("error_description", oe.Description)
	}
	if state != "" {
		q.Set("state", state)
	}
	s.redirectTo(w, redirectURI, q)
}

// redirectTo redirects (303) to a registered redirect URI with the
// response parameters and iss appended to its query.
func (s *Server) redirectTo(w http.ResponseWriter, redirectURI string, q url.Values) {
	q.Set("iss", s.cfg.Issuer)
	sep := "?"
	if strings.Contains(redirectURI, "?") {
		sep = "&"
	}
	h := w.Header()
	h.Set("Location", redirectURI+sep+q.Encode())
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusSeeOther)
}

// The login, consent and error pages: html/template (contextual escaping),
// no scripts, one embedded stylesheet, and a strict Content-Security-Policy.

//go:embed templates
var templateFS embed.FS

// pathStylesheet serves the pages' stylesheet.
const pathStylesheet = "/oauth2/assets/bulwark.css"

var pageTemplates = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "totp", "consent", "error"} {
		out[name] = template.Must(template.ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// pageData is what the page templates show. Every field is escaped by
// html/template.
type pageData struct {
	Title      string
	ClientName string
	CSRFToken  string
	Username   string
	Error      string
	Scopes     []string
	Audiences  []string
	ErrorCode  string
	RequestID  string
}

// validCSPScheme is a URI scheme fit to appear in a CSP source.
var validCSPScheme = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)

// validCSPHost is a host (and port) fit to appear in a CSP source.
var validCSPHost = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$`)

// formActionSource returns the CSP source that lets a form on our pages
// end in a redirect to redirectURI (browsers apply form-action to the
// redirects that follow a submission), or "" when none is needed or safe.
func formActionSource(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil || !validCSPScheme.MatchString(u.Scheme) {
		return ""
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return u.Scheme + ":"
	}
	if !validCSPHost.MatchString(u.Host) {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// renderPage writes a page. redirectURI, if set, is the client's redirect
// URI, where the page's form may lead.
func (s *Server) renderPage(w http.ResponseWriter, r *http.Request, status int, page string, d pageData, redirectURI string) {
	var buf bytes.Buffer
	d.RequestID = httpapi.RequestID(r.Context())
	if err := pageTemplates[page].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log.ErrorContext(r.Context(), "render page failed", "page", page, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	formAction := "'self'"
	if src := formActionSource(redirectURI); src != "" {
		formAction += " " + src
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action "+formAction+
		"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderError writes the error page.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if msg == "" {
		msg = "The request could not be completed."
	}
	s.renderPage(w, r, status, "error", pageData{Title: "Error", ErrorCode: code, Error: msg}, "")
}

func serveStylesheet(w http.ResponseWriter, r *http.Request) {
	css, err := templateFS.ReadFile("templates/bulwark.css")
	if err != nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/css; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(css)
}
