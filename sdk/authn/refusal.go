package authn

import (
	"context"
	"log/slog"
)

// Reasons a token or request is refused. They are stable: dashboards and
// alerts may match on them.
const (
	// ReasonMissingToken: the request carries no access token.
	ReasonMissingToken = "missing_token"
	// ReasonInvalidRequest: the Authorization header is repeated, or not
	// "Bearer <token>" or "DPoP <token>".
	ReasonInvalidRequest = "invalid_request"
	// ReasonMalformed: the token is too large, not a compact JWS of three
	// base64url segments, or its header or claims do not parse.
	ReasonMalformed = "malformed"
	// ReasonAlgNotAllowed: the token's alg is not in the allow-list
	// ("none" and HMAC algorithms never are).
	ReasonAlgNotAllowed = "alg_not_allowed"
	// ReasonForbiddenHeader: the token's header carries jwk, jku, x5u,
	// x5c, crit or another parameter that could choose the key or change
	// how the token is processed.
	ReasonForbiddenHeader = "forbidden_header"
	// ReasonWrongType: the token's typ is not at+jwt (an ID token, say).
	ReasonWrongType = "wrong_typ"
	// ReasonUnknownKey: the token's kid is missing or not in the issuer's
	// key set.
	ReasonUnknownKey = "unknown_kid"
	// ReasonKeyMismatch: the key named by kid is not for the token's alg.
	ReasonKeyMismatch = "key_mismatch"
	// ReasonBadSignature: the signature does not verify.
	ReasonBadSignature = "bad_signature"
	// ReasonWrongIssuer: iss is not the configured issuer.
	ReasonWrongIssuer = "wrong_issuer"
	// ReasonWrongAudience: aud does not contain the configured audience.
	ReasonWrongAudience = "wrong_audience"
	// ReasonExpired: exp has passed (beyond the leeway).
	ReasonExpired = "expired"
	// ReasonNotYetValid: nbf or iat is in the future (beyond the leeway).
	ReasonNotYetValid = "not_yet_valid"
	// ReasonMissingClaim: a required claim (exp, iat, jti, sub,
	// client_id) is missing.
	ReasonMissingClaim = "missing_claim"
	// ReasonRevoked: the token's jti is in the issuer's revocation feed.
	ReasonRevoked = "revoked"
	// ReasonDPoPRequired: the token is DPoP-bound but came as a Bearer
	// token or without a DPoP proof.
	ReasonDPoPRequired = "dpop_required"
	// ReasonDPoPInvalid: the DPoP proof is invalid (signature, htm, htu,
	// iat, ath...), or came with a token that is not DPoP-bound.
	ReasonDPoPInvalid = "dpop_invalid"
	// ReasonDPoPReplay: the DPoP proof was used before.
	ReasonDPoPReplay = "dpop_replay"
	// ReasonCertRequired: the token is bound to a client certificate and
	// the request came without one.
	ReasonCertRequired = "cert_required"
	// ReasonBindingMismatch: the DPoP key or client certificate is not the
	// one the token is bound to.
	ReasonBindingMismatch = "binding_mismatch"
	// ReasonUnbound: Config.RequireSenderConstraint is set and the token is
	// not sender-constrained.
	ReasonUnbound = "sender_constraint_required"
	// ReasonInsufficientScope: the token lacks a scope the resource needs.
	ReasonInsufficientScope = "insufficient_scope"
)

// Refusal describes one refused request or token, for Config.OnRefusal.
// It never holds the token or the proof.
type Refusal struct {
	// Reason is one of the Reason constants.
	Reason string
	// Detail says what exactly was wrong, in fixed words that never quote
	// the token.
	Detail string
	// JTI, Subject and ClientID are the token's claims, set only when its
	// signature verified.
	JTI, Subject, ClientID string
	// RemoteAddr, Method and Path describe the request, when there was one.
	RemoteAddr, Method, Path string
}

// Error is the error of a refused token or request. Its Reason is one of
// the Reason constants.
type Error struct {
	// Reason is one of the Reason constants.
	Reason string
	// Detail says what exactly was wrong; it is not meant for clients.
	Detail string
	// Scheme is the authorization scheme the request used ("Bearer",
	// "DPoP"), or "" when unknown.
	Scheme string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Detail == "" {
		return "authn: token refused: " + e.Reason
	}
	return "authn: token refused: " + e.Reason + ": " + e.Detail
}

// refusal is a refusal in the making: what was wrong and, once the
// signature verified, whose token it was.
type refusal struct {
	reason, detail string
	p              *Principal // claims of a token whose signature verified
}

func refuse(reason, detail string) *refusal { return &refusal{reason: reason, detail: detail} }

// Log attribute keys.
const (
	attrReason     = "reason"
	attrDetail     = "detail"
	attrJTI        = "jti"
	attrSubject    = "sub"
	attrClientID   = "client_id"
	attrRemoteAddr = "remote_addr"
	attrMethod     = "method"
	attrPath       = "path"
)

// report tells Config.OnRefusal and the log about a refusal and returns the
// error for the caller.
func (v *Verifier) report(ctx context.Context, rf *refusal, req *Presentation, scheme string) *Error {
	r := Refusal{Reason: rf.reason, Detail: rf.detail}
	if rf.p != nil {
		r.JTI, r.Subject, r.ClientID = rf.p.JTI, rf.p.Subject, rf.p.ClientID
	}
	if req != nil {
		r.RemoteAddr, r.Method, r.Path = req.RemoteAddr, req.Method, req.Path
	}
	v.log.LogAttrs(ctx, slog.LevelWarn, "access token refused",
		slog.String(attrReason, r.Reason),
		slog.String(attrDetail, r.Detail),
		slog.String(attrJTI, r.JTI),
		slog.String(attrSubject, r.Subject),
		slog.String(attrClientID, r.ClientID),
		slog.String(attrRemoteAddr, r.RemoteAddr),
		slog.String(attrMethod, r.Method),
		slog.String(attrPath, r.Path),
	)
	if v.cfg.OnRefusal != nil {
		v.cfg.OnRefusal(ctx, r)
	}
	return &Error{Reason: rf.reason, Detail: rf.detail, Scheme: scheme}
}
