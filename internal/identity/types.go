package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// Grant types (RFC 6749, RFC 8693).
const (
	GrantAuthorizationCode = "authorization_code"
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// Client authentication methods (RFC 7591, RFC 7523, RFC 8705).
const (
	AuthPrivateKeyJWT       = "private_key_jwt"
	AuthTLSClient           = "tls_client_auth"
	AuthSelfSignedTLSClient = "self_signed_tls_client_auth"
	AuthNone                = "none"
)

// Client profiles.
const (
	// ProfileFAPI2 enforces the FAPI 2.0 Security Profile: a confidential
	// client, PAR, PKCE S256 and sender-constrained tokens.
	ProfileFAPI2 = "fapi2"
	// ProfileOAuth2 is OAuth 2.0 Security BCP without FAPI's extra
	// requirements; public clients (PKCE only) use it.
	ProfileOAuth2 = "oauth2"
)

// Token type identifiers (RFC 8693 §3).
const (
	TokenTypeAccessToken  = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeRefreshToken = "urn:ietf:params:oauth:token-type:refresh_token"
	TokenTypeIDToken      = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT          = "urn:ietf:params:oauth:token-type:jwt"
)

// JWT "typ" header values.
const (
	TypAccessToken = "at+jwt"   // RFC 9068
	TypIDToken     = "JWT"      // OIDC Core
	TypDPoP        = "dpop+jwt" // RFC 9449
)

// ScopeOpenID asks for an ID token.
const ScopeOpenID = "openid"

// User is a local user account, without its secrets.
type User struct {
	ID          string    `json:"user_id"`
	Username    string    `json:"username"`
	Email       string    `json:"email,omitempty"`
	Name        string    `json:"name,omitempty"`
	TOTP        bool      `json:"totp_enrolled"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Disabled    bool      `json:"disabled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// NewUser is what it takes to create a user.
type NewUser struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Email    string `json:"email,omitempty"`
	Name     string `json:"name,omitempty"`
}

// codeData is what an authorization code stands for; the authorize flow
// writes it (identity_codes.data) and the token endpoint redeems it.
type codeData struct {
	UserID              string   `json:"user_id"`
	RedirectURI         string   `json:"redirect_uri"`
	Scopes              []string `json:"scopes"`
	Audiences           []string `json:"audiences"`
	CodeChallenge       string   `json:"code_challenge"`
	CodeChallengeMethod string   `json:"code_challenge_method"`
	Nonce               string   `json:"nonce,omitempty"`
	// DPoPJKT binds the code to a DPoP key (RFC 9449 §10).
	DPoPJKT  string   `json:"dpop_jkt,omitempty"`
	AuthTime int64    `json:"auth_time"` // Unix seconds
	AMR      []string `json:"amr,omitempty"`
}

// newSecret returns a fresh random secret of 32 bytes, base64url-encoded:
// authorization codes, request URIs, refresh tokens, session cookies.
func newSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("identity: crypto/rand failed: " + err.Error()) // rand.Read never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// newID returns a random identifier with a prefix, e.g. "usr_3f9c...".
func newID(prefix string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic("identity: crypto/rand failed: " + err.Error())
	}
	return prefix + "_" + hex.EncodeToString(b)
}

// hashSecret is how secrets are stored: the hex SHA-256 of the secret.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// splitScope splits a space-separated scope parameter (RFC 6749 §3.3),
// dropping duplicates and keeping the first occurrence's order.
func splitScope(s string) []string {
	var out []string
	for f := range strings.FieldsSeq(s) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// joinScope is the inverse of splitScope.
func joinScope(scopes []string) string { return strings.Join(scopes, " ") }

// unixMilli is how times are stored.
func unixMilli(t time.Time) int64 { return t.UnixMilli() }
