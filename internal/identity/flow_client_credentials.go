package identity

import (
	"context"
	"slices"
)

// clientCredentialsGrant serves the client-credentials grant (RFC 6749
// §4.4): a token for the client itself (sub = client_id), with the
// requested scopes (default: every scope the client may have except
// openid) for the requested audiences (default: the client's first). No
// refresh token and no ID token.
func (s *Server) clientCredentialsGrant(_ context.Context, tr *tokenRequest) (*tokenResponse, error) {
	c := tr.client
	def := slices.DeleteFunc(slices.Clone(c.Scopes), func(sc string) bool { return sc == ScopeOpenID })
	scopes, err := narrowScopes(tr.form.Get("scope"), c.Scopes, def)
	if err != nil {
		return nil, err
	}
	if slices.Contains(scopes, ScopeOpenID) {
		return nil, ErrInvalidScope.WithDescription("openid needs a user: the client-credentials grant has none")
	}
	auds, err := requestedAudiences(tr.form, c.Audiences, c.Audiences[:min(1, len(c.Audiences))])
	if err != nil {
		return nil, err
	}
	at, err := s.signAccessToken(c, accessSpec{subject: c.ID, scopes: scopes, audiences: auds, cnf: tr.cnf})
	if err != nil {
		return nil, err
	}
	if err := s.auditIssue(tr.r, issueEvent{activity: actAuthTicket, grantType: tr.grant, client: c, at: at,
		scopes: scopes, audiences: auds}); err != nil {
		return nil, err
	}
	return tr.response(at, scopes), nil
}
