package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
)

// validCodeVerifier is a PKCE code_verifier (RFC 7636 §4.1).
var validCodeVerifier = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// pkceS256 is the S256 code challenge of verifier (RFC 7636 §4.2).
func pkceS256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// revokeTimeout bounds the revocation of a grant after a replayed code or
// refresh token; it runs even when the request that found it has ended.
const revokeTimeout = 10 * time.Second

// codeRow is a row of identity_codes.
type codeRow struct {
	grantID, clientID, data string
	expiresAt               int64
	usedAt                  sql.NullInt64
}

// errRedeemRace is returned inside a redeeming transaction when another
// request used the same code or refresh token first.
var errRedeemRace = errors.New("used concurrently")

// badCode is the one error for a code that is unknown, another client's,
// or expired: which one is not revealed.
func badCode() *Error {
	return ErrInvalidGrant.WithDescription("the authorization code is invalid or expired")
}

// authorizationCodeGrant redeems an authorization code (RFC 6749 §4.1.3)
// with PKCE S256 (RFC 7636) and, for a code bound with dpop_jkt, a DPoP
// proof of the same key (RFC 9449 §10). A code is single-use: a second use
// revokes the grant and every token issued from it (RFC 6749 §4.1.2).
func (s *Server) authorizationCodeGrant(ctx context.Context, tr *tokenRequest) (*tokenResponse, error) {
	c := tr.client
	code := tr.form.Get("code")
	if code == "" {
		return nil, ErrInvalidRequest.WithDescription("code is required")
	}
	hash := hashSecret(code)
	var row codeRow
	err := s.db.QueryRowContext(ctx, "SELECT grant_id, client_id, data, expires_at, used_at FROM identity_codes WHERE code_hash = ?", hash).
		Scan(&row.grantID, &row.clientID, &row.data, &row.expiresAt, &row.usedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, badCode()
	}
	if err != nil {
		return nil, fmt.Errorf("load authorization code: %w", err)
	}
	if row.clientID != c.ID {
		tr.noteAudit("reason", "code of another client")
		return nil, badCode()
	}
	tr.noteAudit("grant_id", row.grantID)
	if row.usedAt.Valid {
		return nil, s.grantReplayed(ctx, tr, row.grantID, "authorization code reuse")
	}
	now := s.now()
	if now.UnixMilli() >= row.expiresAt {
		return nil, badCode()
	}
	var data codeData
	if err := json.Unmarshal([]byte(row.data), &data); err != nil {
		return nil, fmt.Errorf("decode authorization code: %w", err)
	}
	if err := checkCodeRequest(tr, &data); err != nil {
		return nil, err
	}
	user, err := s.loadTokenUser(ctx, data.UserID)
	if err != nil {
		return nil, err
	}
	granted := data.Audiences
	if len(granted) == 0 {
		granted = c.Audiences[:min(1, len(c.Audiences))]
	}
	auds, err := requestedAudiences(tr.form, granted, granted)
	if err != nil {
		return nil, err
	}
	scopes := data.Scopes
	at, err := s.signAccessToken(c, accessSpec{subject: user.ID, user: user, scopes: scopes, audiences: auds,
		authTime: data.AuthTime, cnf: tr.cnf})
	if err != nil {
		return nil, err
	}
	resp := tr.response(at, scopes)
	if slices.Contains(scopes, ScopeOpenID) {
		if resp.IDToken, err = s.signIDToken(c, idTokenSpec{user: user, scopes: scopes, authTime: data.AuthTime,
			nonce: data.Nonce, amr: data.AMR}); err != nil {
			return nil, err
		}
	}
	var saveRefresh func(context.Context, *store.Tx) error
	if c.AllowsGrant(GrantRefreshToken) {
		rd := refreshData{Scopes: scopes, Audiences: granted, UserID: user.ID, AuthTime: data.AuthTime, AMR: data.AMR}
		if tr.cnf != nil {
			rd.JKT, rd.X5TS256 = tr.cnf.JKT, tr.cnf.X5TS256
		}
		if resp.RefreshToken, saveRefresh, err = s.newRefreshToken(c, row.grantID, rd); err != nil {
			return nil, err
		}
	}
	// The grant row is locked first (in recordAccessToken), in the order
	// revokeGrant takes its locks.
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := recordAccessToken(ctx, tx, row.grantID, at); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "UPDATE identity_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL", now.UnixMilli(), hash)
		if err != nil {
			return fmt.Errorf("redeem authorization code: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("redeem authorization code: %w", err)
		} else if n == 0 {
			return errRedeemRace
		}
		if saveRefresh != nil {
			return saveRefresh(ctx, tx)
		}
		return nil
	})
	switch {
	case errors.Is(err, errRedeemRace):
		return nil, s.grantReplayed(ctx, tr, row.grantID, "authorization code reuse")
	case errors.Is(err, errGrantRevoked):
		return nil, grantRevokedError()
	case err != nil:
		return nil, err
	}
	if err := s.auditIssue(tr.r, issueEvent{activity: actAuthTicket, grantType: tr.grant, client: c, user: user, at: at,
		scopes: scopes, audiences: auds, refresh: resp.RefreshToken != "", idToken: resp.IDToken != ""}); err != nil {
		return nil, err
	}
	return resp, nil
}

// checkCodeRequest checks a code redemption against what the code stands
// for: the redirect URI, the PKCE verifier and the DPoP key binding.
func checkCodeRequest(tr *tokenRequest, data *codeData) error {
	if data.RedirectURI != "" && tr.form.Get("redirect_uri") != data.RedirectURI {
		return ErrInvalidGrant.WithDescription("redirect_uri does not match the authorization request")
	}
	verifier := tr.form.Get("code_verifier")
	switch {
	case verifier == "":
		return ErrInvalidRequest.WithDescription("code_verifier is required (PKCE)")
	case data.CodeChallengeMethod != "S256" || data.CodeChallenge == "":
		return ErrInvalidGrant.WithDescription("the authorization request did not use PKCE S256")
	case !validCodeVerifier.MatchString(verifier):
		return ErrInvalidGrant.WithDescription("code_verifier must be 43 to 128 unreserved characters")
	case subtle.ConstantTimeCompare([]byte(pkceS256(verifier)), []byte(data.CodeChallenge)) != 1:
		return ErrInvalidGrant.WithDescription("code_verifier does not match the code challenge")
	}
	if data.DPoPJKT != "" && (tr.proof == nil || tr.proof.Thumbprint != data.DPoPJKT) {
		return ErrInvalidDPoPProof.WithDescription("the authorization code is bound to another DPoP key (dpop_jkt)")
	}
	return nil
}

// grantReplayed handles a code or rotated refresh token presented again:
// the grant and every token issued under it are revoked, and the refusal
// audited as such.
func (s *Server) grantReplayed(ctx context.Context, tr *tokenRequest, grantID, reason string) error {
	tr.noteAudit("grant_id", grantID)
	tr.noteAudit("replay", reason)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if err := s.revokeGrant(ctx, grantID, reason); err != nil {
		return fmt.Errorf("revoke grant after %s: %w", reason, err)
	}
	tr.noteAudit("grant_revoked", true)
	return ErrInvalidGrant.WithDescription("this credential was already used: the grant and its tokens are revoked")
}
