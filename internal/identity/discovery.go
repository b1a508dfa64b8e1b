package identity

import (
	"fmt"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Metadata is the authorization server metadata (RFC 8414, OIDC Discovery
// 1.0), served at both well-known paths.
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	JWKSURI                                    string   `json:"jwks_uri"`
	UserInfoEndpoint                           string   `json:"userinfo_endpoint,omitempty"`
	PushedAuthorizationRequestEndpoint         string   `json:"pushed_authorization_request_endpoint"`
	RequirePushedAuthorizationRequests         bool     `json:"require_pushed_authorization_requests"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	RevocationFeedEndpoint                     string   `json:"bulwark_revocation_feed_endpoint"`
	ScopesSupported                            []string `json:"scopes_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	ResponseModesSupported                     []string `json:"response_modes_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	SubjectTypesSupported                      []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	DPoPSigningAlgValuesSupported              []string `json:"dpop_signing_alg_values_supported"`
	TLSClientCertificateBoundAccessTokens      bool     `json:"tls_client_certificate_bound_access_tokens"`
	AuthorizationResponseISSParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	RequestParameterSupported                  bool     `json:"request_parameter_supported"`
	RequestURIParameterSupported               bool     `json:"request_uri_parameter_supported"`
	ClaimsSupported                            []string `json:"claims_supported"`
}

// Scopes with a meaning to the server; clients may be allowed others.
var standardScopes = []string{ScopeOpenID, "profile", "email"}

// metadata returns the server's metadata.
func (s *Server) metadata() Metadata {
	authMethods := []string{AuthPrivateKeyJWT, AuthSelfSignedTLSClient}
	if s.cfg.ClientCAs != nil {
		authMethods = append(authMethods, AuthTLSClient)
	}
	endpointAuth := append([]string(nil), authMethods...)
	authMethods = append(authMethods, AuthNone)
	return Metadata{
		Issuer:                                     s.cfg.Issuer,
		AuthorizationEndpoint:                      s.endpoint(PathAuthorize),
		TokenEndpoint:                              s.endpoint(PathToken),
		JWKSURI:                                    s.endpoint(PathJWKS),
		UserInfoEndpoint:                           s.endpoint(PathUserInfo),
		PushedAuthorizationRequestEndpoint:         s.endpoint(PathPAR),
		IntrospectionEndpoint:                      s.endpoint(PathIntrospect),
		RevocationEndpoint:                         s.endpoint(PathRevoke),
		RevocationFeedEndpoint:                     s.endpoint(PathRevocations),
		ScopesSupported:                            standardScopes,
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        knownGrants,
		SubjectTypesSupported:                      []string{"public"},
		IDTokenSigningAlgValuesSupported:           []string{s.cfg.SigningAlg},
		TokenEndpointAuthMethodsSupported:          authMethods,
		TokenEndpointAuthSigningAlgValuesSupported: allowedClientAlgs,
		IntrospectionEndpointAuthMethodsSupported:  endpointAuth,
		RevocationEndpointAuthMethodsSupported:     authMethods,
		CodeChallengeMethodsSupported:              []string{"S256"},
		DPoPSigningAlgValuesSupported:              allowedClientAlgs,
		TLSClientCertificateBoundAccessTokens:      true,
		AuthorizationResponseISSParameterSupported: true,
		RequestParameterSupported:                  false,
		RequestURIParameterSupported:               true,
		ClaimsSupported: []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "acr",
			"name", "email", "preferred_username", "client_id", "scope", "cnf", "act"},
	}
}

func (s *Server) registerDiscovery(mux *http.ServeMux) {
	meta := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		writeJSON(w, s.metadata())
	}
	mux.HandleFunc("GET "+PathOIDCDiscovery, meta)
	mux.HandleFunc("GET "+PathASMetadata, meta)
	mux.HandleFunc("GET "+PathJWKS, s.jwks)
}

// jwks serves the published keys. The cache lifetime is a fraction of the
// publish-ahead time, so every verifier sees a key before it signs.
func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	maxAge := min(5*time.Minute, s.cfg.KeyPublishAhead/4)
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(maxAge.Seconds())))
	writeJSON(w, jose.JSONWebKeySet{Keys: s.keys.published(s.now())})
}
