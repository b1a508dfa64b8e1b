package identity

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/bulwarksec/bulwark/internal/store"
)

// refreshRow is a row of identity_refresh_tokens.
type refreshRow struct {
	grantID, clientID, data string
	expiresAt               int64
	usedAt, revokedAt       sql.NullInt64
}

// badRefresh is the one error for a refresh token that is unknown,
// another client's, expired or revoked.
func badRefresh() *Error {
	return ErrInvalidGrant.WithDescription("the refresh token is invalid, expired or revoked")
}

// refreshTokenGrant serves the refresh-token grant (RFC 6749 §6). A
// refresh token belongs to its client and is bound to the DPoP key or
// client certificate it was issued to. A public client's refresh token is
// rotated on every use, and presenting a rotated one revokes the whole
// grant (OAuth 2.0 Security BCP §4.14.2); a confidential client's is not
// rotated (FAPI 2.0: it is sender-constrained already). Scope and audience
// may be narrowed, never widened.
func (s *Server) refreshTokenGrant(ctx context.Context, tr *tokenRequest) (*tokenResponse, error) {
	c := tr.client
	token := tr.form.Get("refresh_token")
	if token == "" {
		return nil, ErrInvalidRequest.WithDescription("refresh_token is required")
	}
	hash := hashSecret(token)
	var row refreshRow
	err := s.db.QueryRowContext(ctx, `SELECT grant_id, client_id, data, expires_at, used_at, revoked_at
		FROM identity_refresh_tokens WHERE token_hash = ?`, hash).
		Scan(&row.grantID, &row.clientID, &row.data, &row.expiresAt, &row.usedAt, &row.revokedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, badRefresh()
	}
	if err != nil {
		return nil, fmt.Errorf("load refresh token: %w", err)
	}
	if row.clientID != c.ID {
		tr.noteAudit("reason", "refresh token of another client")
		return nil, badRefresh()
	}
	tr.noteAudit("grant_id", row.grantID)
	if row.revokedAt.Valid {
		return nil, badRefresh()
	}
	if row.usedAt.Valid {
		return nil, s.grantReplayed(ctx, tr, row.grantID, "refresh token reuse")
	}
	now := s.now()
	if now.UnixMilli() >= row.expiresAt {
		return nil, badRefresh()
	}
	var data refreshData
	if err := json.Unmarshal([]byte(row.data), &data); err != nil {
		return nil, fmt.Errorf("decode refresh token: %w", err)
	}
	if data.JKT != "" && (tr.cnf == nil || tr.cnf.JKT != data.JKT) {
		return nil, ErrInvalidGrant.WithDescription("the refresh token is bound to another DPoP key")
	}
	if data.X5TS256 != "" {
		if chain := peerCertificates(tr.r); len(chain) == 0 || certThumbprint(chain[0]) != data.X5TS256 {
			return nil, ErrInvalidGrant.WithDescription("the refresh token is bound to another client certificate")
		}
	}
	user, err := s.loadTokenUser(ctx, data.UserID)
	if err != nil {
		return nil, err
	}
	scopes, err := narrowScopes(tr.form.Get("scope"), data.Scopes, data.Scopes)
	if err != nil {
		return nil, err
	}
	auds, err := requestedAudiences(tr.form, data.Audiences, data.Audiences)
	if err != nil {
		return nil, err
	}
	at, err := s.signAccessToken(c, accessSpec{subject: user.ID, user: user, scopes: scopes, audiences: auds,
		authTime: data.AuthTime, cnf: tr.cnf})
	if err != nil {
		return nil, err
	}
	resp := tr.response(at, scopes)
	if slices.Contains(scopes, ScopeOpenID) {
		if resp.IDToken, err = s.signIDToken(c, idTokenSpec{user: user, scopes: scopes, authTime: data.AuthTime, amr: data.AMR}); err != nil {
			return nil, err
		}
	}
	rotate := c.Public()
	var saveRefresh func(context.Context, *store.Tx) error
	if rotate {
		// The new token stands for the same grant as the old one: the same
		// scopes and audiences, whatever this request narrowed.
		if resp.RefreshToken, saveRefresh, err = s.newRefreshToken(c, row.grantID, data); err != nil {
			return nil, err
		}
	}
	// The grant row is locked first (in recordAccessToken), in the order
	// revokeGrant takes its locks.
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := recordAccessToken(ctx, tx, row.grantID, at); err != nil {
			return err
		}
		q := "UPDATE identity_refresh_tokens SET client_id = client_id WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL"
		args := []any{hash}
		if rotate {
			q = "UPDATE identity_refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL"
			args = []any{now.UnixMilli(), hash}
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("use refresh token: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("use refresh token: %w", err)
		} else if n == 0 {
			return errRedeemRace
		}
		if saveRefresh != nil {
			return saveRefresh(ctx, tx)
		}
		return nil
	})
	switch {
	case errors.Is(err, errRedeemRace) && rotate:
		return nil, s.grantReplayed(ctx, tr, row.grantID, "refresh token reuse")
	case errors.Is(err, errRedeemRace):
		return nil, badRefresh() // revoked meanwhile
	case errors.Is(err, errGrantRevoked):
		return nil, grantRevokedError()
	case err != nil:
		return nil, err
	}
	if err := s.auditIssue(tr.r, issueEvent{activity: actServiceTicketRenew, grantType: tr.grant, client: c, user: user, at: at,
		scopes: scopes, audiences: auds, refresh: resp.RefreshToken != "", idToken: resp.IDToken != ""}); err != nil {
		return nil, err
	}
	return resp, nil
}
