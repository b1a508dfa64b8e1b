package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// ClientAssertionTypeJWT is the client_assertion_type of private_key_jwt
// (RFC 7523 §2.2).
const ClientAssertionTypeJWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Limits on client assertions.
const (
	// maxClientAssertionLen bounds the assertion parsed.
	maxClientAssertionLen = 8 << 10
	// maxAssertionLifetime bounds how far in the future an assertion's exp
	// may be: an assertion is made for one request.
	maxAssertionLifetime = 5 * time.Minute
	// maxJTILen bounds the jti of assertions and proofs.
	maxJTILen = 256
	// maxClaimedIDLen bounds the claimed client ID written to the audit log.
	maxClaimedIDLen = 128
)

// replay namespaces (identity_replay.namespace).
const (
	replayClientAssertion = "client_assertion"
	replayDPoP            = "dpop"
)

// clientAssertionAlgs are allowedClientAlgs as JOSE algorithms: RS256, HS*
// and "none" are refused when the assertion is parsed.
var clientAssertionAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.PS256}

// authFailure is why a client failed to authenticate.
type authFailure struct {
	// reason is a fixed string for the audit log.
	reason string
	// err is what the client is told: invalid_client, or invalid_request
	// for a malformed request.
	err *Error
}

// clientFailure is an invalid_client failure. Its description never says
// whether the client exists.
func clientFailure(reason string) *authFailure {
	return &authFailure{reason: reason, err: ErrInvalidClient.WithDescription("client authentication failed")}
}

// clientFailureDesc is an invalid_client failure with a description that
// is safe to give: it is reached only after the client proved possession
// of its key, or does not depend on the client at all.
func clientFailureDesc(reason, format string, args ...any) *authFailure {
	return &authFailure{reason: reason, err: ErrInvalidClient.WithDescription(format, args...)}
}

// authenticateClient authenticates the client of an OAuth request at
// endpoint, the path of the endpoint called (PathToken, PathPAR,
// PathIntrospect or PathRevoke). form is the request's parsed body. One
// method per request: private_key_jwt (RFC 7523), tls_client_auth or
// self_signed_tls_client_auth (RFC 8705), or none for public clients at
// the token endpoint (authorization_code and refresh_token grants), the
// PAR endpoint and the revocation endpoint.
//
// A failure is an *Error (invalid_client, or invalid_request when several
// methods are combined) whose description does not reveal whether the
// client exists; it has been audited and counted here, so callers only
// write it. Other errors are internal.
func (s *Server) authenticateClient(r *http.Request, form url.Values, endpoint string) (*Client, error) {
	claimed, method := form.Get("client_id"), ""
	c, fail, err := s.authenticate(r, form, endpoint, &claimed, &method)
	if err != nil {
		return nil, err
	}
	if fail == nil {
		return c, nil
	}
	claimed = auditText(claimed, maxClaimedIDLen)
	s.metrics.tokenErrors.WithLabelValues(path.Base(endpoint), fail.err.Code).Inc()
	ev := newEvent(classAuthentication, actPreauth, false, fail.reason)
	ev.Message = "client authentication failed"
	ev.Actor = &audit.Actor{AppUID: claimed}
	ev.Unmapped = map[string]any{"endpoint": endpoint}
	if method != "" {
		ev.Unmapped["auth_method"] = method
	}
	if err := s.emit(r.Context(), r, ev); err != nil {
		return nil, err
	}
	return nil, fail.err
}

// authenticate does the work of authenticateClient. It sets *claimed to
// the client ID the request claims and *method to the method tried.
func (s *Server) authenticate(r *http.Request, form url.Values, endpoint string, claimed, method *string) (*Client, *authFailure, error) {
	httpAuth := r.Header.Get("Authorization") != ""
	secret := form.Has("client_secret")
	assertion := form.Has("client_assertion") || form.Has("client_assertion_type")
	n := 0
	for _, b := range []bool{httpAuth, secret, assertion} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, &authFailure{reason: "several client authentication methods in one request",
			err: ErrInvalidRequest.WithDescription("use exactly one client authentication method")}, nil
	case httpAuth || secret:
		*method = "client_secret"
		return nil, clientFailureDesc("client secret authentication attempted",
			"client secrets are not supported: use private_key_jwt or mutual TLS"), nil
	case assertion:
		*method = AuthPrivateKeyJWT
		return s.authenticateAssertion(r.Context(), form, endpoint, claimed)
	}

	id := form.Get("client_id")
	if id == "" {
		return nil, clientFailureDesc("no client authentication", "client authentication is required"), nil
	}
	c, err := s.clients.get(r.Context(), id)
	if errors.Is(err, ErrClientNotFound) {
		return nil, clientFailure("unknown or disabled client"), nil
	}
	if err != nil {
		return nil, nil, err
	}
	*method = c.TokenEndpointAuthMethod
	var fail *authFailure
	switch c.TokenEndpointAuthMethod {
	case AuthTLSClient:
		fail = s.authenticateTLSClient(r, c)
	case AuthSelfSignedTLSClient:
		fail = s.authenticateSelfSigned(r, c)
	case AuthNone:
		fail = publicClientAllowed(form, endpoint)
	default:
		fail = clientFailure("client credentials missing for the registered method")
	}
	if fail != nil {
		return nil, fail, nil
	}
	return c, nil, nil
}

// publicClientAllowed reports whether a public client (no authentication)
// may call endpoint with form.
func publicClientAllowed(form url.Values, endpoint string) *authFailure {
	switch endpoint {
	case PathToken:
		if g := form.Get("grant_type"); g == GrantAuthorizationCode || g == GrantRefreshToken {
			return nil
		}
	case PathPAR, PathRevoke:
		return nil
	}
	return clientFailure("public client at an endpoint or grant that needs authentication")
}

// assertionClaims are the claims of a client assertion (RFC 7523 §3).
// Times are JSON numbers, possibly fractional (RFC 7519 NumericDate).
type assertionClaims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  audienceList `json:"aud"`
	Expiry    *float64     `json:"exp"`
	IssuedAt  *float64     `json:"iat"`
	NotBefore *float64     `json:"nbf"`
	JTI       string       `json:"jti"`
}

// numericDate converts a NumericDate, refusing values no clock will reach.
func numericDate(f *float64) (time.Time, bool) {
	if f == nil || math.IsNaN(*f) || *f < 0 || *f > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(*f), 0), true
}

// parseClientAssertion parses the private_key_jwt parameters of form
// without verifying the signature: the assertion type, the size and shape
// of the JWS, its algorithm and header; it returns the JWS and its claims,
// which are to be trusted only once the signature is verified (the JWS
// verifies the very payload they were decoded from).
func parseClientAssertion(form url.Values) (*jose.JSONWebSignature, *assertionClaims, *authFailure) {
	if form.Get("client_assertion_type") != ClientAssertionTypeJWT {
		return nil, nil, clientFailureDesc("unsupported client_assertion_type",
			"client_assertion_type must be %s", ClientAssertionTypeJWT)
	}
	raw := form.Get("client_assertion")
	if raw == "" || len(raw) > maxClientAssertionLen || strings.Count(raw, ".") != 2 {
		return nil, nil, clientFailureDesc("malformed client assertion", "the client assertion is not a compact JWS of at most %d bytes", maxClientAssertionLen)
	}
	jws, err := jose.ParseSignedCompact(raw, clientAssertionAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, nil, clientFailureDesc("client assertion not parsed or algorithm not allowed",
			"the client assertion must be a JWS signed with %s", strings.Join(allowedClientAlgs, ", "))
	}
	h := jws.Signatures[0].Protected
	if h.JSONWebKey != nil || h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil || h.ExtraHeaders["crit"] != nil {
		return nil, nil, clientFailureDesc("client assertion header names its own key",
			"the client assertion must not carry jwk, jku, x5u or crit headers: keys come from the registration")
	}
	if typ, ok := h.ExtraHeaders[jose.HeaderType]; ok {
		t, isString := typ.(string)
		t = strings.TrimPrefix(strings.ToLower(t), "application/")
		if !isString || t == TypAccessToken || t == TypDPoP {
			return nil, nil, clientFailureDesc("client assertion has the type of another token", "the client assertion's typ header is not acceptable")
		}
	}
	var claims assertionClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims.Issuer == "" {
		return nil, nil, clientFailureDesc("client assertion claims not readable", "the client assertion's claims are malformed or lack iss")
	}
	if id := form.Get("client_id"); id != "" && id != claims.Issuer {
		return nil, &claims, clientFailureDesc("client_id differs from the assertion issuer", "client_id does not match the client assertion's issuer")
	}
	return jws, &claims, nil
}

// authenticateAssertion checks a private_key_jwt client assertion.
func (s *Server) authenticateAssertion(ctx context.Context, form url.Values, endpoint string, claimed *string) (*Client, *authFailure, error) {
	jws, claims, fail := parseClientAssertion(form)
	if claims != nil {
		*claimed = claims.Issuer
	}
	if fail != nil {
		return nil, fail, nil
	}
	h := jws.Signatures[0].Protected
	c, err := s.clients.get(ctx, claims.Issuer)
	if errors.Is(err, ErrClientNotFound) {
		return nil, clientFailure("unknown or disabled client"), nil
	}
	if err != nil {
		return nil, nil, err
	}
	if c.TokenEndpointAuthMethod != AuthPrivateKeyJWT {
		return nil, clientFailure("client is not registered for private_key_jwt"), nil
	}
	key := assertionKey(c, h)
	if key == nil {
		return nil, clientFailure("no registered key matches the client assertion"), nil
	}
	if _, err := jws.Verify(key.Key); err != nil {
		return nil, clientFailure("client assertion signature invalid"), nil
	}
	if fail := s.checkAssertionClaims(c, claims, endpoint); fail != nil {
		return nil, fail, nil
	}
	exp, _ := numericDate(claims.Expiry)
	err = s.useOnce(ctx, replayClientAssertion, c.ID+":"+claims.JTI, exp)
	if errors.Is(err, errReplay) {
		return nil, clientFailureDesc("client assertion replayed", "the client assertion was already used (jti)"), nil
	}
	if err != nil {
		return nil, nil, err
	}
	return c, nil, nil
}

// checkAssertionClaims checks the claims of a verified assertion of c.
func (s *Server) checkAssertionClaims(c *Client, claims *assertionClaims, endpoint string) *authFailure {
	now := s.now()
	switch {
	case claims.Subject == "":
		return clientFailureDesc("client assertion without sub", "the client assertion must have sub equal to the client ID")
	case claims.Subject != c.ID || claims.Issuer != c.ID:
		return clientFailureDesc("client assertion iss or sub is not the client", "the client assertion's iss and sub must be the client ID")
	}
	accepted := []string{s.cfg.Issuer}
	if strings.HasPrefix(endpoint, "/") {
		accepted = append(accepted, s.endpoint(endpoint))
	}
	if len(claims.Audience) == 0 {
		return clientFailureDesc("client assertion without aud", "the client assertion's aud must be the issuer %s", s.cfg.Issuer)
	}
	for _, a := range claims.Audience {
		if !slices.Contains(accepted, a) {
			return clientFailureDesc("client assertion for another audience", "the client assertion's aud must be the issuer %s", s.cfg.Issuer)
		}
	}
	exp, ok := numericDate(claims.Expiry)
	switch {
	case !ok:
		return clientFailureDesc("client assertion without exp", "the client assertion must have exp")
	case !exp.After(now):
		return clientFailureDesc("client assertion expired", "the client assertion has expired")
	case exp.After(now.Add(maxAssertionLifetime)):
		return clientFailureDesc("client assertion lives too long", "the client assertion's exp is more than %s ahead", maxAssertionLifetime)
	}
	iat, ok := numericDate(claims.IssuedAt)
	switch {
	case !ok:
		return clientFailureDesc("client assertion without iat", "the client assertion must have iat")
	case iat.After(now.Add(s.cfg.ProofWindow)):
		return clientFailureDesc("client assertion issued in the future", "the client assertion's iat is in the future")
	}
	if claims.NotBefore != nil {
		nbf, ok := numericDate(claims.NotBefore)
		if !ok || nbf.After(now.Add(s.cfg.ProofWindow)) {
			return clientFailureDesc("client assertion not yet valid", "the client assertion is not yet valid (nbf)")
		}
	}
	if claims.JTI == "" || len(claims.JTI) > maxJTILen {
		return clientFailureDesc("client assertion jti missing or too long", "the client assertion needs a jti of at most %d bytes", maxJTILen)
	}
	return nil
}

// assertionKey picks the key of c that verifies an assertion with header
// h: the key named by kid, or else the only key fit for the algorithm.
// Keys never come from the assertion itself.
func assertionKey(c *Client, h jose.Header) *jose.JSONWebKey {
	if c.JWKS == nil {
		return nil
	}
	var found *jose.JSONWebKey
	for i := range c.JWKS.Keys {
		k := &c.JWKS.Keys[i]
		if (h.KeyID != "" && k.KeyID != h.KeyID) || (k.Algorithm != "" && k.Algorithm != h.Algorithm) ||
			(k.Use != "" && k.Use != "sig") || !keyFitsAlg(k.Key, h.Algorithm) {
			continue
		}
		if found != nil {
			return nil // ambiguous
		}
		found = k
	}
	return found
}

// keyFitsAlg reports whether the public key pub can verify alg.
func keyFitsAlg(pub any, alg string) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	case *ecdsa.PublicKey:
		return alg == string(jose.ES256) && k.Curve == elliptic.P256()
	case *rsa.PublicKey:
		return alg == string(jose.PS256) && k.N.BitLen() >= 2048
	}
	return false
}

// peerCertificates returns the client's TLS certificate chain, leaf first.
func peerCertificates(r *http.Request) []*x509.Certificate {
	if r.TLS == nil {
		return nil
	}
	return r.TLS.PeerCertificates
}

// authenticateTLSClient checks tls_client_auth (RFC 8705 §2.1): a chain to
// identity.mtls_client_ca_file for client authentication, whose leaf is the
// registered subject.
func (s *Server) authenticateTLSClient(r *http.Request, c *Client) *authFailure {
	chain := peerCertificates(r)
	if s.cfg.ClientCAs == nil {
		return clientFailure("tls_client_auth is not enabled (no client CA)")
	}
	if len(chain) == 0 {
		return clientFailure("no client certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.cfg.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: s.now()}); err != nil {
		return clientFailure("client certificate does not verify")
	}
	var ok bool
	switch {
	case c.TLSClientAuthSubjectDN != "":
		ok = leaf.Subject.String() == c.TLSClientAuthSubjectDN
	case c.TLSClientAuthSANDNS != "":
		ok = slices.Contains(leaf.DNSNames, c.TLSClientAuthSANDNS)
	case c.TLSClientAuthSANURI != "":
		ok = slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == c.TLSClientAuthSANURI })
	}
	if !ok {
		return clientFailure("client certificate is not the registered subject")
	}
	return nil
}

// authenticateSelfSigned checks self_signed_tls_client_auth (RFC 8705
// §2.2): the leaf certificate is one registered in the client's JWKS.
func (s *Server) authenticateSelfSigned(r *http.Request, c *Client) *authFailure {
	chain := peerCertificates(r)
	if len(chain) == 0 {
		return clientFailure("no client certificate")
	}
	leaf, now := chain[0], s.now()
	for _, reg := range c.certificates() {
		if bytes.Equal(reg.Raw, leaf.Raw) {
			if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
				return clientFailure("client certificate outside its validity")
			}
			return nil
		}
	}
	return clientFailure("client certificate is not registered")
}

// auditText makes untrusted text fit for an audit attribute: valid UTF-8,
// at most n bytes.
func auditText(s string, n int) string {
	return truncate(strings.ToValidUTF8(s, "\uFFFD"), n)
}

// errorLabel is the metrics label of err.
func errorLabel(err error) string {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.Code
	}
	return ErrServerError.Code
}
