package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP parameters (RFC 6238 defaults, what authenticator apps expect).
const (
	totpPeriod     = 30 // seconds
	totpSkew       = 1  // steps either side of now
	totpSecretSize = 20 // bytes (160 bits, RFC 4226 §4)
	totpIssuer     = "Bulwark"
)

var totpOpts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// errTOTPInvalid is a wrong, malformed or already-used TOTP code.
var errTOTPInvalid = errors.New("invalid TOTP code")

// totpContext is the sealing context of a user's TOTP secret.
func totpContext(userID string) string { return "identity_users/" + userID + "/totp" }

// EnrollTOTP gives the user a new TOTP secret (replacing any previous one)
// and returns its otpauth:// URL: show it once (as a QR code); it is not
// retrievable later. The secret is stored sealed.
func (s *Server) EnrollTOTP(ctx context.Context, userID string) (string, error) {
	return s.enrollTOTP(ctx, nil, userID)
}

func (s *Server) enrollTOTP(ctx context.Context, r *http.Request, userID string) (string, error) {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return "", err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: totpIssuer, AccountName: u.Username, Period: totpPeriod,
		SecretSize: totpSecretSize, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", fmt.Errorf("generate TOTP secret: %w", err)
	}
	sealed, err := s.sealer.Seal([]byte(key.Secret()), totpContext(u.ID))
	if err != nil {
		return "", fmt.Errorf("seal TOTP secret: %w", err)
	}
	if err := s.updateUser(ctx, u.ID, "totp_sealed = ?, totp_last_step = 0", sealed); err != nil {
		return "", err
	}
	if err := s.emitUserChange(ctx, r, actMFAEnable, u, "TOTP enrolled"); err != nil {
		return "", err
	}
	return key.URL(), nil
}

// DisableTOTP removes the user's TOTP second factor.
func (s *Server) DisableTOTP(ctx context.Context, userID string) error {
	return s.disableTOTP(ctx, nil, userID)
}

func (s *Server) disableTOTP(ctx context.Context, r *http.Request, userID string) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	if err := s.updateUser(ctx, u.ID, "totp_sealed = NULL, totp_last_step = 0"); err != nil {
		return err
	}
	return s.emitUserChange(ctx, r, actMFADisable, u, "TOTP removed")
}

// checkTOTP verifies code against the user's TOTP secret, accepting one
// step of clock skew either way. A time step is accepted at most once:
// the accepted step is recorded, atomically, and no step at or before it
// is ever accepted again. It returns errTOTPInvalid for a wrong, malformed
// or replayed code.
func (s *Server) checkTOTP(ctx context.Context, userID, code string) error {
	if len(code) != otp.DigitsSix.Length() {
		return errTOTPInvalid
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return errTOTPInvalid
		}
	}
	var (
		sealed   []byte
		lastStep int64
	)
	err := s.db.QueryRowContext(ctx, "SELECT totp_sealed, totp_last_step FROM identity_users WHERE user_id = ?", userID).Scan(&sealed, &lastStep)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrUserNotFound
	}
	if err != nil {
		return fmt.Errorf("load TOTP state: %w", err)
	}
	if sealed == nil {
		return errors.New("user has no TOTP secret")
	}
	secret, err := s.sealer.Open(sealed, totpContext(userID))
	if err != nil {
		return fmt.Errorf("open TOTP secret: %w", err)
	}
	now := s.now().Unix() / totpPeriod
	matched := int64(-1)
	for step := now - totpSkew; step <= now+totpSkew; step++ {
		if step <= lastStep || step < 0 {
			continue
		}
		ok, err := hotp.ValidateCustom(code, uint64(step), string(secret), totpOpts)
		if err != nil {
			return fmt.Errorf("check TOTP code: %w", err)
		}
		if ok && matched < 0 {
			matched = step
		}
	}
	if matched < 0 {
		return errTOTPInvalid
	}
	res, err := s.db.ExecContext(ctx, "UPDATE identity_users SET totp_last_step = ? WHERE user_id = ? AND totp_last_step < ?", matched, userID, matched)
	if err != nil {
		return fmt.Errorf("record TOTP step: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errTOTPInvalid // a concurrent login used this step first
	}
	return nil
}
