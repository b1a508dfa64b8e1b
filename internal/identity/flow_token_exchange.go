package identity

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
)

// maxActDepth bounds a delegation chain (the nested act claims).
const maxActDepth = 8

// tokenLeeway is the clock skew tolerated on the nbf of tokens this server
// issued.
const tokenLeeway = 30 * time.Second

// exchangeRequest is what an exchange policy decides on.
type exchangeRequest struct {
	// client is the authenticated acting client.
	client *Client
	// subject is the verified subject token; actor the verified actor
	// token, or nil.
	subject, actor *atClaims
	// scopes and audiences are those the new token would have.
	scopes, audiences []string
}

// exchangePolicy decides whether a client may exchange a subject token
// (RFC 8693 §1.1 delegation). It returns nil to allow, or an *Error.
// The policy engine replaces the default below.
type exchangePolicy interface {
	allowExchange(ctx context.Context, req *exchangeRequest) error
}

// audienceOrMayAct is the default exchange policy: a client may exchange a
// token that was issued to it (the token's aud names the client) or that
// names it in may_act.
type audienceOrMayAct struct{}

var _ exchangePolicy = audienceOrMayAct{}

func (audienceOrMayAct) allowExchange(_ context.Context, req *exchangeRequest) error {
	if slices.Contains(req.subject.Audience, req.client.ID) ||
		(req.subject.MayAct != nil && req.subject.MayAct.Subject == req.client.ID) {
		return nil
	}
	return ErrInvalidRequest.WithDescription("the client may not act for the subject of this token (not in its aud or may_act)")
}

// exchangePolicy returns the server's exchange policy.
func (s *Server) exchangePolicy() exchangePolicy { return audienceOrMayAct{} }

// errTokenRejected is wrapped by verifyIssuedAccessToken's verdicts on
// a token; its other errors are the server's failures.
var errTokenRejected = errors.New("access token rejected")

// verifyIssuedAccessToken verifies an access token this server issued:
// signature, typ, iss, exp, nbf, and that it is not revoked.
func (s *Server) verifyIssuedAccessToken(ctx context.Context, token string) (*atClaims, error) {
	payload, err := s.keys.verify(token, TypAccessToken)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenRejected, err)
	}
	var c atClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", errTokenRejected, err)
	}
	now := s.now()
	switch {
	case c.Issuer != s.cfg.Issuer || c.JTI == "" || c.Subject == "" || c.ClientID == "" || len(c.Audience) == 0:
		return nil, fmt.Errorf("%w: lacks iss, jti, sub, client_id or aud", errTokenRejected)
	case c.Expiry <= now.Unix():
		return nil, fmt.Errorf("%w: expired", errTokenRejected)
	case c.NotBefore > now.Add(tokenLeeway).Unix():
		return nil, fmt.Errorf("%w: not yet valid", errTokenRejected)
	case c.Act.depth() > maxActDepth:
		return nil, fmt.Errorf("%w: delegation chain too long", errTokenRejected)
	}
	revoked, err := s.isRevoked(ctx, c.JTI)
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, fmt.Errorf("%w: revoked", errTokenRejected)
	}
	return &c, nil
}

// tokenExchangeGrant serves token exchange (RFC 8693) for delegation: the
// acting client presents a user's (or service's) access token and gets a
// token for a downstream audience with the same subject, narrower scopes,
// no longer lifetime, and the chain of actors in act.
func (s *Server) tokenExchangeGrant(ctx context.Context, tr *tokenRequest) (*tokenResponse, error) {
	c, f := tr.client, tr.form
	if f.Get("subject_token") == "" || f.Get("subject_token_type") == "" {
		return nil, ErrInvalidRequest.WithDescription("subject_token and subject_token_type are required")
	}
	if f.Get("subject_token_type") != TokenTypeAccessToken {
		return nil, ErrInvalidRequest.WithDescription("subject_token_type must be %s", TokenTypeAccessToken)
	}
	if rt := f.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return nil, ErrInvalidRequest.WithDescription("only %s can be requested", TokenTypeAccessToken)
	}
	subject, err := s.verifyIssuedAccessToken(ctx, f.Get("subject_token"))
	if err != nil {
		if !errors.Is(err, errTokenRejected) {
			return nil, err
		}
		return nil, ErrInvalidRequest.WithDescription("subject_token is not a valid access token of this server").WithCause(err)
	}
	tr.noteAudit("subject_jti", subject.JTI)
	actor, err := s.exchangeActor(ctx, tr)
	if err != nil {
		return nil, err
	}
	// The chain keeps who acted before: the subject token's own chain or,
	// for a user's token that was never exchanged, the client the user
	// authorized (RFC 8693 §4.1: nested act claims are prior actors), so
	// that services and the audit trail still see which application a
	// request came from once the acting client's id is the client_id.
	prior := subject.Act
	if prior == nil && subject.subjectIsUser() {
		prior = &actClaim{Subject: subject.ClientID}
	}
	if prior.depth()+1 > maxActDepth {
		return nil, ErrInvalidRequest.WithDescription("the delegation chain would be longer than %d", maxActDepth)
	}
	subjectScopes := splitScope(subject.Scope)
	common := slices.DeleteFunc(slices.Clone(subjectScopes), func(sc string) bool { return !slices.Contains(c.Scopes, sc) })
	scopes, err := narrowScopes(f.Get("scope"), common, common)
	if err != nil {
		return nil, err
	}
	auds, err := requestedAudiences(f, c.Audiences, c.Audiences[:min(1, len(c.Audiences))])
	if err != nil {
		return nil, err
	}
	req := &exchangeRequest{client: c, subject: subject, actor: actor, scopes: scopes, audiences: auds}
	if err := s.exchangePolicy().allowExchange(ctx, req); err != nil {
		return nil, err
	}
	act := &actClaim{Subject: c.ID, Act: prior}
	var user *tokenUser
	if subject.subjectIsUser() {
		user = &tokenUser{ID: subject.Subject}
	}
	at, err := s.signAccessToken(c, accessSpec{subject: subject.Subject, user: user, scopes: scopes, audiences: auds,
		authTime: subject.AuthTime, cnf: tr.cnf, act: act, notAfter: time.Unix(subject.Expiry, 0)})
	if err != nil {
		return nil, err
	}
	if err := s.recordUnderSubjectGrant(ctx, subject.JTI, at); err != nil {
		return nil, err
	}
	if err := s.auditIssue(tr.r, issueEvent{activity: actServiceTicket, grantType: tr.grant, client: c, user: user, at: at,
		scopes: scopes, audiences: auds, act: act}); err != nil {
		return nil, err
	}
	resp := tr.response(at, scopes)
	resp.IssuedTokenType = TokenTypeAccessToken
	return resp, nil
}

// exchangeActor verifies the optional actor token: an access token of the
// acting client itself (sub and client_id are the client), held by the
// same key or certificate as this request when it is sender-constrained.
func (s *Server) exchangeActor(ctx context.Context, tr *tokenRequest) (*atClaims, error) {
	tok, typ := tr.form.Get("actor_token"), tr.form.Get("actor_token_type")
	switch {
	case tok == "" && typ == "":
		return nil, nil
	case tok == "" || typ == "":
		return nil, ErrInvalidRequest.WithDescription("actor_token and actor_token_type go together")
	case typ != TokenTypeAccessToken:
		return nil, ErrInvalidRequest.WithDescription("actor_token_type must be %s", TokenTypeAccessToken)
	}
	actor, err := s.verifyIssuedAccessToken(ctx, tok)
	if err != nil {
		if !errors.Is(err, errTokenRejected) {
			return nil, err
		}
		return nil, ErrInvalidRequest.WithDescription("actor_token is not a valid access token of this server").WithCause(err)
	}
	if actor.Subject != tr.client.ID || actor.ClientID != tr.client.ID {
		return nil, ErrInvalidRequest.WithDescription("actor_token must be the acting client's own token")
	}
	if cnf := actor.Cnf; cnf != nil {
		if cnf.JKT != "" && (tr.cnf == nil || tr.cnf.JKT != cnf.JKT) {
			return nil, ErrInvalidRequest.WithDescription("actor_token is bound to another DPoP key")
		}
		if cnf.X5TS256 != "" {
			if chain := peerCertificates(tr.r); len(chain) == 0 || certThumbprint(chain[0]) != cnf.X5TS256 {
				return nil, ErrInvalidRequest.WithDescription("actor_token is bound to another client certificate")
			}
		}
	}
	return actor, nil
}

// recordUnderSubjectGrant records a token obtained by exchange under the
// grant of its subject token, if that was a user grant, so that revoking
// the user's grant revokes the delegated tokens too.
func (s *Server) recordUnderSubjectGrant(ctx context.Context, subjectJTI string, at *issuedAccess) error {
	var grantID string
	err := s.db.QueryRowContext(ctx, "SELECT grant_id FROM identity_access_tokens WHERE jti = ?", subjectJTI).Scan(&grantID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find subject grant: %w", err)
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error { return recordAccessToken(ctx, tx, grantID, at) })
	if errors.Is(err, errGrantRevoked) {
		return grantRevokedError()
	}
	return err
}
