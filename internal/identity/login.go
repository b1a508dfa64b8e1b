package identity

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// The login flow: the authorization endpoint starts a login session (a
// cookie naming an identity_login_sessions row) and shows the login form;
// each step below is a POST valid only in its stage, with the session's
// CSRF token: password, then TOTP if the user has it, then consent, which
// issues the authorization code and ends the session.
const (
	pathLogin     = PathAuthorize + "/login"
	pathLoginTOTP = PathAuthorize + "/totp"
	pathConsent   = PathAuthorize + "/consent"

	// loginCookie names the login session; the __Host- prefix pins it to
	// this origin, Secure and Path=/.
	loginCookie = "__Host-bulwark_login"

	stageLogin   = "login"
	stageTOTP    = "totp"
	stageConsent = "consent"
)

// loginSession is a row of identity_login_sessions.
type loginSession struct {
	hash     string
	clientID string
	req      authzRequest
	csrfHash string
	stage    string
	userID   string
	authTime int64
	amr      []string
}

// startLogin opens a login session for a validated request and shows the
// login form.
func (s *Server) startLogin(w http.ResponseWriter, r *http.Request, c *Client, req *authzRequest) {
	cookie, csrf := newSecret(), newSecret()
	reqJSON, err := json.Marshal(req)
	if err != nil {
		s.redirectError(w, r, req.RedirectURI, req.State, fmt.Errorf("encode login request: %w", err))
		return
	}
	expires := s.now().Add(s.cfg.LoginTTL)
	_, err = s.db.ExecContext(r.Context(), "INSERT INTO identity_login_sessions (session_hash, client_id, request, csrf_hash, stage, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
		hashSecret(cookie), c.ID, string(reqJSON), hashSecret(csrf), stageLogin, expires.UnixMilli())
	if err != nil {
		s.redirectError(w, r, req.RedirectURI, req.State, fmt.Errorf("start login session: %w", err))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: cookie, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(s.cfg.LoginTTL.Seconds())})
	s.renderPage(w, r, http.StatusOK, "login", pageData{Title: "Sign in", ClientName: clientName(c), CSRFToken: csrf}, req.RedirectURI)
}

func clearLoginCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// errNoSession is a missing, expired or finished login session.
var errNoSession = errors.New("no login session")

// loadSession reads the live login session named by the cookie value.
func (s *Server) loadSession(ctx context.Context, cookie string) (*loginSession, error) {
	ls := &loginSession{hash: hashSecret(cookie)}
	var reqJSON, amr string
	err := s.db.QueryRowContext(ctx, "SELECT client_id, request, csrf_hash, stage, user_id, auth_time, amr FROM identity_login_sessions WHERE session_hash = ? AND expires_at > ?",
		ls.hash, s.now().UnixMilli()).Scan(&ls.clientID, &reqJSON, &ls.csrfHash, &ls.stage, &ls.userID, &ls.authTime, &amr)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("load login session: %w", err)
	}
	if err := json.Unmarshal([]byte(reqJSON), &ls.req); err != nil {
		return nil, fmt.Errorf("decode login session: %w", err)
	}
	ls.amr = strings.Fields(amr)
	return ls, nil
}

// advanceSession moves the session from stage from to stage to, exactly
// once.
func (s *Server) advanceSession(ctx context.Context, ls *loginSession, from, to, userID string, authTime int64, amr []string) error {
	res, err := s.db.ExecContext(ctx, "UPDATE identity_login_sessions SET stage = ?, user_id = ?, auth_time = ?, amr = ? WHERE session_hash = ? AND stage = ? AND expires_at > ?",
		to, userID, authTime, strings.Join(amr, " "), ls.hash, from, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("advance login session: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errNoSession
	}
	ls.stage, ls.userID, ls.authTime, ls.amr = to, userID, authTime, amr
	return nil
}

// loginStep checks a POST to a login step: its form, its session cookie,
// its CSRF token (bound to the session) and that the session is at stage.
// On failure it has answered the request and returns ok false.
func (s *Server) loginStep(w http.ResponseWriter, r *http.Request, stage string) (ls *loginSession, c *Client, form url.Values, ok bool) {
	ctx := r.Context()
	form, err := readParams(w, r)
	if err != nil {
		s.authorizeErrorPage(w, r, err)
		return nil, nil, nil, false
	}
	expired := ErrInvalidRequest.WithDescription("the login session is missing or has expired; start again from the application")
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		s.authorizeErrorPage(w, r, expired)
		return nil, nil, nil, false
	}
	if ls, err = s.loadSession(ctx, ck.Value); err != nil {
		if errors.Is(err, errNoSession) {
			err = expired
		}
		s.authorizeErrorPage(w, r, err)
		return nil, nil, nil, false
	}
	csrf := form["csrf_token"]
	if len(csrf) != 1 || csrf[0] == "" || subtle.ConstantTimeCompare([]byte(hashSecret(csrf[0])), []byte(ls.csrfHash)) != 1 {
		ev := newEvent(classAuthentication, actLogon, false, "csrf_token_invalid")
		ev.Message = "login step refused: CSRF token missing or wrong"
		ev.Actor = &audit.Actor{AppUID: ls.clientID}
		if ls.userID != "" {
			ev.Actor.User = &audit.User{UID: ls.userID}
		}
		if err := s.emit(ctx, r, ev); err != nil {
			s.authorizeErrorPage(w, r, err)
			return nil, nil, nil, false
		}
		s.metrics.tokenErrors.WithLabelValues("authorize", "csrf").Inc()
		s.renderError(w, r, http.StatusForbidden, "access_denied", "the form is stale or was not sent by this site; start again from the application")
		return nil, nil, nil, false
	}
	if ls.stage != stage {
		// Steps are valid only in order: an out-of-order step ends the session.
		_, _ = s.db.ExecContext(ctx, "DELETE FROM identity_login_sessions WHERE session_hash = ?", ls.hash)
		clearLoginCookie(w)
		s.authorizeErrorPage(w, r, ErrInvalidRequest.WithDescription("this step is not expected now; start again from the application"))
		return nil, nil, nil, false
	}
	if c, err = s.clients.get(ctx, ls.clientID); err != nil {
		if errors.Is(err, ErrClientNotFound) {
			err = ErrInvalidClient.WithDescription("the client is unknown or disabled")
		}
		s.authorizeErrorPage(w, r, err)
		return nil, nil, nil, false
	}
	return ls, c, form, true
}

// loginPassword handles the username and password step.
func (s *Server) loginPassword(w http.ResponseWriter, r *http.Request) {
	ls, c, form, ok := s.loginStep(w, r, stageLogin)
	if !ok {
		return
	}
	ctx := r.Context()
	username := form.Get("username")
	u, err := s.authenticatePassword(ctx, r, c, username, form.Get("password"))
	if errors.Is(err, errLoginRefused) {
		s.renderPage(w, r, http.StatusUnauthorized, "login", pageData{Title: "Sign in", ClientName: clientName(c), CSRFToken: form.Get("csrf_token"),
			Username: username, Error: "Sign-in failed. Check your username and password. After repeated failures, wait before trying again."}, ls.req.RedirectURI)
		return
	}
	if err != nil {
		s.authorizeErrorPage(w, r, err)
		return
	}
	if u.TOTP {
		if err := s.advanceSession(ctx, ls, stageLogin, stageTOTP, u.ID, 0, []string{"pwd"}); err != nil {
			s.sessionError(w, r, err)
			return
		}
		s.renderPage(w, r, http.StatusOK, "totp", pageData{Title: "Verification code", ClientName: clientName(c), CSRFToken: form.Get("csrf_token")}, ls.req.RedirectURI)
		return
	}
	s.finishAuthentication(w, r, ls, c, u, form.Get("csrf_token"), []string{"pwd"})
}

// loginTOTP handles the second-factor step.
func (s *Server) loginTOTP(w http.ResponseWriter, r *http.Request) {
	ls, c, form, ok := s.loginStep(w, r, stageTOTP)
	if !ok {
		return
	}
	u, err := s.authenticateTOTP(r.Context(), r, c, ls.userID, form.Get("code"))
	if errors.Is(err, errLoginRefused) {
		s.renderPage(w, r, http.StatusUnauthorized, "totp", pageData{Title: "Verification code", ClientName: clientName(c), CSRFToken: form.Get("csrf_token"),
			Error: "The code is wrong or was already used. Wait for the next code and try again."}, ls.req.RedirectURI)
		return
	}
	if err != nil {
		s.authorizeErrorPage(w, r, err)
		return
	}
	s.finishAuthentication(w, r, ls, c, u, form.Get("csrf_token"), []string{"pwd", "otp"})
}

// finishAuthentication records a completed login and shows the consent
// page.
func (s *Server) finishAuthentication(w http.ResponseWriter, r *http.Request, ls *loginSession, c *Client, u *User, csrf string, amr []string) {
	ctx := r.Context()
	ev := newEvent(classAuthentication, actLogon, true, "")
	ev.Message = "user logged in"
	ev.Actor = &audit.Actor{User: &audit.User{UID: u.ID, Name: u.Username}, AppName: c.Name, AppUID: c.ID}
	ev.Unmapped = map[string]any{"amr": amr}
	if err := s.emit(ctx, r, ev); err != nil {
		s.authorizeErrorPage(w, r, err)
		return
	}
	s.metrics.logins.WithLabelValues("success").Inc()
	if err := s.advanceSession(ctx, ls, ls.stage, stageConsent, u.ID, s.now().Unix(), amr); err != nil {
		s.sessionError(w, r, err)
		return
	}
	s.renderPage(w, r, http.StatusOK, "consent", pageData{Title: "Allow access", ClientName: clientName(c), CSRFToken: csrf,
		Username: u.Username, Scopes: ls.req.Scopes, Audiences: ls.req.Audiences}, ls.req.RedirectURI)
}

// loginConsent handles the consent step: deny sends access_denied back;
// approve creates the grant and the authorization code.
func (s *Server) loginConsent(w http.ResponseWriter, r *http.Request) {
	ls, c, form, ok := s.loginStep(w, r, stageConsent)
	if !ok {
		return
	}
	ctx := r.Context()
	action := form["action"]
	if len(action) != 1 || (action[0] != "approve" && action[0] != "deny") {
		s.authorizeErrorPage(w, r, ErrInvalidRequest.WithDescription("action must be approve or deny"))
		return
	}
	if action[0] == "deny" {
		if err := s.endSession(ctx, s.db, ls); err != nil {
			s.sessionError(w, r, err)
			return
		}
		clearLoginCookie(w)
		s.redirectError(w, r, ls.req.RedirectURI, ls.req.State, ErrAccessDenied.WithDescription("the user denied the request"))
		return
	}
	u, err := s.GetUser(ctx, ls.userID)
	if err == nil && (u.Disabled || !u.LockedUntil.IsZero()) {
		err = ErrUserNotFound
	}
	if errors.Is(err, ErrUserNotFound) {
		_ = s.endSession(ctx, s.db, ls)
		clearLoginCookie(w)
		s.redirectError(w, r, ls.req.RedirectURI, ls.req.State, ErrAccessDenied.WithDescription("the account is no longer usable"))
		return
	}
	if err != nil {
		s.authorizeErrorPage(w, r, err)
		return
	}
	code, grantID := newSecret(), newID("grt")
	data, err := json.Marshal(codeData{UserID: u.ID, RedirectURI: ls.req.RedirectURI, Scopes: ls.req.Scopes, Audiences: ls.req.Audiences,
		CodeChallenge: ls.req.CodeChallenge, CodeChallengeMethod: ls.req.CodeChallengeMethod, Nonce: ls.req.Nonce, DPoPJKT: ls.req.DPoPJKT,
		AuthTime: ls.authTime, AMR: ls.amr})
	if err != nil {
		s.authorizeErrorPage(w, r, fmt.Errorf("encode code: %w", err))
		return
	}
	now := s.now()
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := s.endSession(ctx, tx, ls); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO identity_grants (grant_id, client_id, subject, scope, created_at) VALUES (?, ?, ?, ?, ?)",
			grantID, c.ID, u.ID, joinScope(ls.req.Scopes), now.UnixMilli()); err != nil {
			return fmt.Errorf("create grant: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO identity_codes (code_hash, grant_id, client_id, data, expires_at) VALUES (?, ?, ?, ?, ?)",
			hashSecret(code), grantID, c.ID, string(data), now.Add(s.cfg.CodeTTL).UnixMilli()); err != nil {
			return fmt.Errorf("create code: %w", err)
		}
		return nil
	})
	if err != nil {
		s.sessionError(w, r, err)
		return
	}
	clearLoginCookie(w)
	q := url.Values{"code": {code}}
	if ls.req.State != "" {
		q.Set("state", ls.req.State)
	}
	s.redirectTo(w, ls.req.RedirectURI, q)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// endSession deletes a session at its current stage, exactly once.
func (s *Server) endSession(ctx context.Context, db execer, ls *loginSession) error {
	res, err := db.ExecContext(ctx, "DELETE FROM identity_login_sessions WHERE session_hash = ? AND stage = ?", ls.hash, ls.stage)
	if err != nil {
		return fmt.Errorf("end login session: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errNoSession
	}
	return nil
}

// sessionError answers a step whose session vanished or moved on under it
// (a concurrent submission) or whose update failed.
func (s *Server) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errNoSession) {
		err = ErrInvalidRequest.WithDescription("the login session has ended; start again from the application")
	}
	s.authorizeErrorPage(w, r, err)
}

// clientName is how the login pages name a client.
func clientName(c *Client) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ID
}

// errLoginRefused is a refused login step: wrong, unknown, locked,
// throttled or disabled, told apart only in the audit log.
var errLoginRefused = errors.New("login refused")

// authRow is the authentication state of a user.
type authRow struct {
	user        *User
	hash        string
	failed      int
	lastFailure int64
	lockedUntil int64
}

// loadAuthRow reads the authentication state of the user whose username or
// user ID is key.
func (s *Server) loadAuthRow(ctx context.Context, key string) (*authRow, error) {
	row := s.db.QueryRowContext(ctx, "SELECT "+userColumns+", password_hash, failed_logins, last_failure_at FROM identity_users WHERE user_id = ? OR username = ?", key, key)
	ar := &authRow{}
	u, err := scanUser(rowScanner{row, []any{&ar.hash, &ar.failed, &ar.lastFailure}}, s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	ar.user = u
	if !u.LockedUntil.IsZero() {
		ar.lockedUntil = u.LockedUntil.UnixMilli()
	}
	return ar, nil
}

// rowScanner appends extra destinations to the userColumns ones.
type rowScanner struct {
	row   scanner
	extra []any
}

func (rs rowScanner) Scan(dest ...any) error { return rs.row.Scan(append(dest, rs.extra...)...) }

// throttled says why an attempt must be refused without checking the
// secret: the account is locked, or the back-off delay after the last
// failure (BackoffBase·2^(n-1), at most LockoutDuration) has not passed.
func (s *Server) throttled(ar *authRow, nowMs int64) string {
	if ar.lockedUntil > nowMs {
		return "locked"
	}
	if ar.failed > 0 && s.cfg.BackoffBase > 0 {
		delay := min(s.cfg.BackoffBase<<min(ar.failed-1, 20), s.cfg.LockoutDuration)
		if nowMs < ar.lastFailure+delay.Milliseconds() {
			return "backoff"
		}
	}
	return ""
}

// claimAttempt counts the attempt as a failure before the secret is
// checked, as a compare-and-swap on the failure count: of concurrent
// attempts only one proceeds, so parallel guesses gain nothing. A success
// then resets (or restores) the count.
func (s *Server) claimAttempt(ctx context.Context, ar *authRow, nowMs int64) (bool, error) {
	res, err := s.db.ExecContext(ctx, "UPDATE identity_users SET failed_logins = failed_logins + 1, last_failure_at = ? WHERE user_id = ? AND failed_logins = ? AND locked_until <= ?",
		nowMs, ar.user.ID, ar.failed, nowMs)
	if err != nil {
		return false, fmt.Errorf("record login attempt: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// attemptFailed keeps the claimed failure and locks the account when it
// reaches MaxFailures; it returns errLoginRefused (or an audit error).
func (s *Server) attemptFailed(ctx context.Context, r *http.Request, c *Client, ar *authRow, nowMs int64, reason string) error {
	if ar.failed+1 >= s.cfg.MaxFailures {
		until := nowMs + s.cfg.LockoutDuration.Milliseconds()
		if _, err := s.db.ExecContext(ctx, "UPDATE identity_users SET locked_until = ? WHERE user_id = ?", until, ar.user.ID); err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		ev := newEvent(classAccountChange, actLock, true, "too_many_failures")
		ev.Message = "account locked after repeated login failures"
		ev.Actor = &audit.Actor{AppName: "bulwark identity"}
		ev.Resources = []audit.Resource{{Type: "user", UID: ar.user.ID, Name: ar.user.Username}}
		ev.Unmapped = map[string]any{"failed_logins": ar.failed + 1, "locked_until": until}
		if err := s.emit(ctx, r, ev); err != nil {
			return err
		}
	}
	return s.loginFailed(ctx, r, c, ar.user.ID, ar.user.Username, reason)
}

// loginFailed audits and counts a refused login step.
func (s *Server) loginFailed(ctx context.Context, r *http.Request, c *Client, userID, username, reason string) error {
	ev := newEvent(classAuthentication, actLogon, false, reason)
	ev.Message = "login refused"
	ev.Actor = &audit.Actor{AppName: c.Name, AppUID: c.ID}
	if userID != "" || username != "" {
		ev.Actor.User = &audit.User{UID: userID, Name: username}
	}
	if err := s.emit(ctx, r, ev); err != nil {
		return err
	}
	result := "failure"
	if reason == "locked" || reason == "backoff" {
		result = "locked"
	}
	s.metrics.logins.WithLabelValues(result).Inc()
	return errLoginRefused
}

// authenticatePassword checks a username and password under the back-off
// and lockout rules. Unknown and disabled users cost a password check
// too. Every refusal is audited and returns errLoginRefused. For a user
// with TOTP, a right password leaves the failure count as it was: only
// the complete login resets it, so that knowing the password does not
// buy unlimited second-factor guesses.
func (s *Server) authenticatePassword(ctx context.Context, r *http.Request, c *Client, username, password string) (*User, error) {
	if len(password) > maxPasswordBytes {
		password = password[:maxPasswordBytes]
	}
	name, err := normalizeUsername(username)
	if err != nil {
		// Not recorded: a malformed username is often a mistyped password.
		s.burnPasswordCheck(password)
		return nil, s.loginFailed(ctx, r, c, "", "", "invalid_username")
	}
	ar, err := s.loadAuthRow(ctx, name)
	if errors.Is(err, ErrUserNotFound) {
		s.burnPasswordCheck(password)
		return nil, s.loginFailed(ctx, r, c, "", name, "unknown_user")
	}
	if err != nil {
		return nil, err
	}
	if ar.user.Disabled {
		s.burnPasswordCheck(password)
		return nil, s.loginFailed(ctx, r, c, ar.user.ID, name, "disabled")
	}
	nowMs := s.now().UnixMilli()
	if reason := s.throttled(ar, nowMs); reason != "" {
		return nil, s.loginFailed(ctx, r, c, ar.user.ID, name, reason)
	}
	if ok, err := s.claimAttempt(ctx, ar, nowMs); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return nil, s.loginFailed(ctx, r, c, ar.user.ID, name, "backoff")
	}
	ok, rehash, err := s.verifyPassword(ar.hash, password)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, s.attemptFailed(ctx, r, c, ar, nowMs, "invalid_password")
	}
	if ar.user.TOTP {
		_, err = s.db.ExecContext(ctx, "UPDATE identity_users SET failed_logins = ?, last_failure_at = ? WHERE user_id = ? AND failed_logins = ?",
			ar.failed, ar.lastFailure, ar.user.ID, ar.failed+1)
	} else {
		err = s.resetFailures(ctx, ar.user.ID)
	}
	if err != nil {
		return nil, err
	}
	if rehash {
		if h, err := s.hashPassword(password); err == nil {
			_, err = s.db.ExecContext(ctx, "UPDATE identity_users SET password_hash = ? WHERE user_id = ? AND password_hash = ?", h, ar.user.ID, ar.hash)
			if err != nil {
				s.log.WarnContext(ctx, "password rehash failed", "user_id", ar.user.ID, "error", err)
			}
		}
	}
	return ar.user, nil
}

// authenticateTOTP checks the second factor of userID under the same
// back-off and lockout rules as passwords.
func (s *Server) authenticateTOTP(ctx context.Context, r *http.Request, c *Client, userID, code string) (*User, error) {
	ar, err := s.loadAuthRow(ctx, userID)
	if errors.Is(err, ErrUserNotFound) {
		return nil, s.loginFailed(ctx, r, c, userID, "", "unknown_user")
	}
	if err != nil {
		return nil, err
	}
	if ar.user.Disabled || !ar.user.TOTP {
		return nil, s.loginFailed(ctx, r, c, userID, ar.user.Username, "disabled")
	}
	nowMs := s.now().UnixMilli()
	if reason := s.throttled(ar, nowMs); reason != "" {
		return nil, s.loginFailed(ctx, r, c, userID, ar.user.Username, reason)
	}
	if ok, err := s.claimAttempt(ctx, ar, nowMs); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return nil, s.loginFailed(ctx, r, c, userID, ar.user.Username, "backoff")
	}
	err = s.checkTOTP(ctx, userID, code)
	if errors.Is(err, errTOTPInvalid) {
		return nil, s.attemptFailed(ctx, r, c, ar, nowMs, "invalid_totp")
	}
	if err != nil {
		return nil, err
	}
	if err := s.resetFailures(ctx, userID); err != nil {
		return nil, err
	}
	return ar.user, nil
}

// resetFailures clears the failure count after a complete login.
func (s *Server) resetFailures(ctx context.Context, userID string) error {
	if _, err := s.db.ExecContext(ctx, "UPDATE identity_users SET failed_logins = 0, last_failure_at = 0, locked_until = 0 WHERE user_id = ?", userID); err != nil {
		return fmt.Errorf("reset login failures: %w", err)
	}
	return nil
}
