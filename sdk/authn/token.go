package authn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxJTILength bounds the jti accepted.
const maxJTILength = 256

// forbiddenHeaders are JOSE header parameters an access token must not
// carry: ways to name a key other than the issuer's published kid, critical
// extensions, and processing changes.
var forbiddenHeaders = map[string]bool{
	"jwk": true, "jku": true, "x5u": true, "x5c": true,
	"crit": true, "b64": true, "zip": true, "enc": true,
}

// base64URL marks the bytes of the base64url alphabet.
var base64URL = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

// shape checks a token's shape before anything parses it: bounded size,
// exactly two dots, only base64url characters. It returns the index of the
// last dot.
func shape(token string) (int, *refusal) {
	if len(token) > MaxTokenSize {
		return 0, refuse(ReasonMalformed, "token is too large")
	}
	first, last, dots := -1, -1, 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		if c == '.' {
			dots++
			if first < 0 {
				first = i
			}
			last = i
			continue
		}
		if !base64URL[c] {
			return 0, refuse(ReasonMalformed, "token holds a character outside base64url")
		}
	}
	if dots != 2 {
		return 0, refuse(ReasonMalformed, "token is not a compact JWS of three segments")
	}
	if first == 0 || last == first+1 {
		return 0, refuse(ReasonMalformed, "token has an empty header or payload")
	}
	return last, nil
}

// checkHeader decodes the protected header and refuses one that is not a
// JSON object, repeats a parameter (parsers disagree on which copy wins)
// or holds a forbidden parameter.
func checkHeader(segment string) *refusal {
	raw, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return refuse(ReasonMalformed, "header is not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return refuse(ReasonMalformed, "header is not a JSON object")
	}
	seen := make(map[string]bool, 4)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return refuse(ReasonMalformed, "header is not a JSON object")
		}
		name, _ := tok.(string)
		if seen[name] {
			return refuse(ReasonMalformed, "header repeats a parameter")
		}
		seen[name] = true
		if forbiddenHeaders[name] {
			return refuse(ReasonForbiddenHeader, "header parameter "+name+" is not allowed")
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return refuse(ReasonMalformed, "header is not a JSON object")
		}
	}
	if _, err := dec.Token(); err != nil {
		return refuse(ReasonMalformed, "header is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return refuse(ReasonMalformed, "header has trailing data")
	}
	return nil
}

// accessClaims are the claims of an RFC 9068 access token.
type accessClaims struct {
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Audience  audience      `json:"aud"`
	Expiry    *numericDate  `json:"exp"`
	NotBefore *numericDate  `json:"nbf"`
	IssuedAt  *numericDate  `json:"iat"`
	AuthTime  *numericDate  `json:"auth_time"`
	JTI       string        `json:"jti"`
	ClientID  string        `json:"client_id"`
	Scope     string        `json:"scope"`
	Cnf       *confirmation `json:"cnf"`
	Act       *Actor        `json:"act"`
}

// audience is aud: one string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audience{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*a = list
	return nil
}

// numericDate is a JWT NumericDate: a JSON number of seconds.
type numericDate struct{ t time.Time }

func (d *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if math.IsNaN(f) || f < 0 || f > 1<<40 {
		return errors.New("NumericDate out of range")
	}
	sec, frac := math.Modf(f)
	d.t = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}

// confirmation is cnf as sent; unknown members make it unusable.
type confirmation struct {
	JKT     string `json:"jkt"`
	X5TS256 string `json:"x5t#S256"`
	other   bool
}

func (c *confirmation) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k, v := range m {
		var s string
		switch k {
		case "jkt":
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			c.JKT = s
		case "x5t#S256":
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			c.X5TS256 = s
		default:
			c.other = true
		}
	}
	return nil
}

// verifyJWT is the full check of a token that is not in the cache: shape,
// header, key, signature, claims, revocation. refresh is called, at most
// once, when the kid is unknown; it reports whether the key set changed.
func (v *Verifier) verifyJWT(token string, refresh func() bool) (*Principal, string, *refusal) {
	if rf := checkHeader(token[:strings.IndexByte(token, '.')]); rf != nil {
		return nil, "", rf
	}
	jws, err := jose.ParseSignedCompact(token, v.algs)
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return nil, "", refuse(ReasonAlgNotAllowed, "the token's algorithm is not allowed")
		}
		return nil, "", refuse(ReasonMalformed, "token is not a valid JWS")
	}
	if len(jws.Signatures) != 1 {
		return nil, "", refuse(ReasonMalformed, "token must have exactly one signature")
	}
	h := jws.Signatures[0].Header
	if h.JSONWebKey != nil {
		return nil, "", refuse(ReasonForbiddenHeader, "header parameter jwk is not allowed")
	}
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return nil, "", refuse(ReasonWrongType, "typ is not at+jwt")
	}
	if h.KeyID == "" || len(h.KeyID) > maxKIDLength {
		return nil, "", refuse(ReasonUnknownKey, "kid is missing or too long")
	}
	key, ok := v.keys.lookup(h.KeyID)
	if !ok && refresh() {
		key, ok = v.keys.lookup(h.KeyID)
	}
	if !ok {
		return nil, "", refuse(ReasonUnknownKey, "kid is not in the issuer's key set")
	}
	if !containsString(key.algs, h.Algorithm) {
		return nil, "", refuse(ReasonKeyMismatch, "the key named by kid is not for the token's algorithm")
	}
	payload, err := jws.Verify(key.key)
	if err != nil {
		return nil, "", refuse(ReasonBadSignature, "signature does not verify")
	}
	p, rf := v.checkClaims(payload)
	return p, h.KeyID, rf
}

// checkClaims checks the claims of a token whose signature verified.
func (v *Verifier) checkClaims(payload []byte) (*Principal, *refusal) {
	var c accessClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, refuse(ReasonMalformed, "claims do not parse")
	}
	var all map[string]any
	if err := json.Unmarshal(payload, &all); err != nil {
		return nil, refuse(ReasonMalformed, "claims do not parse")
	}
	p := &Principal{
		Subject: c.Subject, ClientID: c.ClientID, JTI: c.JTI,
		Scopes: strings.Fields(c.Scope), Audience: c.Audience,
		Actor: c.Act, Claims: all,
	}
	if c.Cnf != nil {
		p.Confirmation = Confirmation{JKT: c.Cnf.JKT, X5TS256: c.Cnf.X5TS256}
	}
	if c.Expiry != nil {
		p.Expiry = c.Expiry.t
	}
	if c.IssuedAt != nil {
		p.IssuedAt = c.IssuedAt.t
	}
	if c.AuthTime != nil {
		p.AuthTime = c.AuthTime.t
	}
	fail := func(reason, detail string) (*Principal, *refusal) {
		return nil, &refusal{reason: reason, detail: detail, p: p}
	}
	now, leeway := v.cfg.Now(), v.cfg.Leeway
	switch {
	case c.Issuer != v.cfg.Issuer:
		return fail(ReasonWrongIssuer, "iss is not the configured issuer")
	case !containsString(c.Audience, v.cfg.Audience):
		return fail(ReasonWrongAudience, "aud does not contain the configured audience")
	case c.Expiry == nil:
		return fail(ReasonMissingClaim, "exp is missing")
	case c.IssuedAt == nil:
		return fail(ReasonMissingClaim, "iat is missing")
	case c.JTI == "" || len(c.JTI) > maxJTILength:
		return fail(ReasonMissingClaim, "jti is missing or too long")
	case c.Subject == "":
		return fail(ReasonMissingClaim, "sub is missing")
	case c.ClientID == "":
		return fail(ReasonMissingClaim, "client_id is missing")
	case !now.Before(c.Expiry.t.Add(leeway)):
		return fail(ReasonExpired, "exp has passed")
	case c.NotBefore != nil && now.Add(leeway).Before(c.NotBefore.t):
		return fail(ReasonNotYetValid, "nbf is in the future")
	case now.Add(leeway).Before(c.IssuedAt.t):
		return fail(ReasonNotYetValid, "iat is in the future")
	case c.Cnf != nil && (c.Cnf.other || !c.Cnf.Bound() || c.Cnf.JKT != "" && c.Cnf.X5TS256 != ""):
		return fail(ReasonMalformed, "cnf holds no single supported binding")
	case v.revoked.revoked(c.JTI):
		return fail(ReasonRevoked, "jti is revoked")
	}
	return p, nil
}

// Bound reports whether cnf names exactly a key or certificate.
func (c *confirmation) Bound() bool { return c.JKT != "" || c.X5TS256 != "" }

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
