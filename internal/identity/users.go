package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// ErrUserNotFound is returned for an unknown user.
var ErrUserNotFound = errors.New("user not found")

// ErrUserExists is returned when creating a user whose username is taken.
var ErrUserExists = errors.New("user already exists")

// ErrInvalidUser wraps every refusal of bad user input (username, email,
// name, password policy); the message names the field.
var ErrInvalidUser = errors.New("invalid user")

// Password policy and hash format.
const (
	minPasswordRunes = 12
	maxPasswordBytes = 256
	argonSaltLen     = 16
	argonKeyLen      = 32
)

// Account Change activities that server.go does not name.
const (
	actAccountEnable  = 2
	actAccountDisable = 5
	actAccountDelete  = 6
)

// validUsername: lower-case letters, digits and . _ @ + -, starting with a
// letter or digit. Usernames are folded to lower case, so "Alice" and
// "alice" are one account.
var validUsername = regexp.MustCompile(`^[a-z0-9][a-z0-9._@+-]{0,127}$`)

// normalizeUsername folds and checks a username.
func normalizeUsername(s string) (string, error) {
	u := strings.ToLower(strings.TrimSpace(s))
	if !validUsername.MatchString(u) {
		return "", fmt.Errorf("%w: username: must be 1 to 128 letters, digits, '.', '_', '@', '+' or '-', starting with a letter or digit", ErrInvalidUser)
	}
	if strings.HasPrefix(u, "usr_") {
		return "", fmt.Errorf("%w: username: must not start with \"usr_\" (reserved for user IDs)", ErrInvalidUser)
	}
	return u, nil
}

// checkText bounds a free-text profile field.
func checkText(field, v string, limit int) error {
	if len(v) > limit || !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %s: at most %d bytes of printable UTF-8", ErrInvalidUser, field, limit)
	}
	return nil
}

// checkPassword applies the password policy.
func checkPassword(username, password string) error {
	switch {
	case len(password) > maxPasswordBytes:
		return fmt.Errorf("%w: password: at most %d bytes", ErrInvalidUser, maxPasswordBytes)
	case !utf8.ValidString(password):
		return fmt.Errorf("%w: password: must be valid UTF-8", ErrInvalidUser)
	case utf8.RuneCountInString(password) < minPasswordRunes:
		return fmt.Errorf("%w: password: at least %d characters", ErrInvalidUser, minPasswordRunes)
	case strings.EqualFold(password, username):
		return fmt.Errorf("%w: password: must not be the username", ErrInvalidUser)
	}
	return nil
}

// argonParams are the cost parameters of an argon2id hash.
type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
}

func (s *Server) argonParams() argonParams {
	return argonParams{memory: s.cfg.Argon2MemoryKiB, time: s.cfg.Argon2Iterations, threads: s.cfg.Argon2Parallelism}
}

// hashPassword returns the argon2id PHC string of password under the
// configured parameters.
func (s *Server) hashPassword(password string) (string, error) {
	p := s.argonParams()
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// parsePHC decodes an argon2id PHC string, refusing parameters outside
// sane bounds so that a corrupted row cannot exhaust memory.
func parsePHC(phc string) (argonParams, []byte, []byte, error) {
	var p argonParams
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errors.New("not an argon2id v=19 PHC string")
	}
	var m, t, par uint64
	for kv := range strings.SplitSeq(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("parameter %q: %w", k, err)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			par = n
		default:
			return p, nil, nil, fmt.Errorf("unknown parameter %q", k)
		}
	}
	if m < 8 || m > 4<<20 || t < 1 || t > 100 || par < 1 || par > 255 {
		return p, nil, nil, errors.New("parameters out of range")
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, nil, nil, errors.New("bad salt")
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, errors.New("bad hash")
	}
	return argonParams{memory: uint32(m), time: uint32(t), threads: uint8(par)}, salt, key, nil
}

// verifyPassword compares password with a PHC hash in constant time.
// rehash reports that the hash uses other parameters than the
// configured ones.
func (s *Server) verifyPassword(phc, password string) (ok, rehash bool, err error) {
	p, salt, key, err := parsePHC(phc)
	if err != nil {
		return false, false, fmt.Errorf("stored password hash: %w", err)
	}
	got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(key)))
	ok = subtle.ConstantTimeCompare(got, key) == 1
	return ok, p != s.argonParams() || len(salt) != argonSaltLen || len(key) != argonKeyLen, nil
}

// dummySalt is the salt of the password check done for unknown users.
var dummySalt = []byte("bulwark-no-user!")

// burnPasswordCheck costs what a real password check costs, so that the
// response time does not reveal whether a username exists.
func (s *Server) burnPasswordCheck(password string) {
	p := s.argonParams()
	_ = argon2.IDKey([]byte(password), dummySalt, p.time, p.memory, p.threads, argonKeyLen)
}

// userColumns are the columns scanUser reads.
const userColumns = "user_id, username, email, name, CASE WHEN totp_sealed IS NULL THEN 0 ELSE 1 END, locked_until, disabled_at, created_at, updated_at"

type scanner interface{ Scan(dest ...any) error }

// scanUser reads a row of userColumns; now decides whether a lock is
// still in force.
func scanUser(row scanner, now time.Time) (*User, error) {
	var (
		u                        User
		totp                     int
		locked, created, updated int64
		disabled                 sql.NullInt64
	)
	if err := row.Scan(&u.ID, &u.Username, &u.Email, &u.Name, &totp, &locked, &disabled, &created, &updated); err != nil {
		return nil, err
	}
	u.TOTP, u.Disabled = totp == 1, disabled.Valid
	if locked > now.UnixMilli() {
		u.LockedUntil = time.UnixMilli(locked).UTC()
	}
	u.CreatedAt, u.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return &u, nil
}

// CreateUser creates a local user after checking the username, profile and
// password policy (errors wrapping ErrInvalidUser), and audits it.
func (s *Server) CreateUser(ctx context.Context, nu NewUser) (*User, error) {
	return s.createUser(ctx, nil, nu)
}

func (s *Server) createUser(ctx context.Context, r *http.Request, nu NewUser) (*User, error) {
	username, err := normalizeUsername(nu.Username)
	if err != nil {
		return nil, err
	}
	if err := checkText("email", nu.Email, 254); err != nil {
		return nil, err
	}
	if nu.Email != "" && !strings.Contains(nu.Email, "@") {
		return nil, fmt.Errorf("%w: email: must contain '@'", ErrInvalidUser)
	}
	if err := checkText("name", nu.Name, 200); err != nil {
		return nil, err
	}
	if err := checkPassword(username, nu.Password); err != nil {
		return nil, err
	}
	hash, err := s.hashPassword(nu.Password)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	u := &User{ID: newID("usr"), Username: username, Email: nu.Email, Name: nu.Name, CreatedAt: now, UpdatedAt: now}
	_, err = s.db.ExecContext(ctx, "INSERT INTO identity_users (user_id, username, password_hash, email, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		u.ID, u.Username, hash, u.Email, u.Name, now.UnixMilli(), now.UnixMilli())
	if store.IsUniqueViolation(err) {
		return nil, ErrUserExists
	}
	if err != nil {
		return nil, fmt.Errorf("create user %q: %w", username, err)
	}
	if err := s.emitUserChange(ctx, r, actCreate, u, "user created"); err != nil {
		return nil, err
	}
	return u, nil
}

// GetUser returns the user with that user ID or username.
func (s *Server) GetUser(ctx context.Context, idOrUsername string) (*User, error) {
	key := idOrUsername
	if !strings.HasPrefix(key, "usr_") {
		key = strings.ToLower(key)
	}
	u, err := scanUser(s.db.QueryRowContext(ctx, "SELECT "+userColumns+" FROM identity_users WHERE user_id = ? OR username = ?", key, key), s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns every user, ordered by username.
func (s *Server) ListUsers(ctx context.Context) ([]*User, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+userColumns+" FROM identity_users ORDER BY username")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	now := s.now()
	out := []*User{}
	for rows.Next() {
		u, err := scanUser(rows, now)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// SetPassword replaces a user's password after checking the policy.
func (s *Server) SetPassword(ctx context.Context, userID, password string) error {
	return s.setPassword(ctx, nil, userID, password)
}

func (s *Server) setPassword(ctx context.Context, r *http.Request, userID, password string) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	if err := checkPassword(u.Username, password); err != nil {
		return err
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	if err := s.updateUser(ctx, u.ID, "password_hash = ?", hash); err != nil {
		return err
	}
	return s.emitUserChange(ctx, r, actPasswordChange, u, "password set")
}

// DisableUser disables a user: they can no longer log in, and every grant
// they gave is revoked.
func (s *Server) DisableUser(ctx context.Context, userID string) error {
	return s.setUserDisabled(ctx, nil, userID, true)
}

// EnableUser enables a disabled user.
func (s *Server) EnableUser(ctx context.Context, userID string) error {
	return s.setUserDisabled(ctx, nil, userID, false)
}

func (s *Server) setUserDisabled(ctx context.Context, r *http.Request, userID string, disabled bool) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	if !disabled {
		if err := s.updateUser(ctx, u.ID, "disabled_at = NULL"); err != nil {
			return err
		}
		return s.emitUserChange(ctx, r, actAccountEnable, u, "user enabled")
	}
	if err := s.updateUser(ctx, u.ID, "disabled_at = ?", s.now().UnixMilli()); err != nil {
		return err
	}
	if err := s.revokeUserGrants(ctx, u.ID, "user_disabled"); err != nil {
		return err
	}
	return s.emitUserChange(ctx, r, actAccountDisable, u, "user disabled")
}

// DeleteUser deletes a user, their logins in progress and every grant
// they gave.
func (s *Server) DeleteUser(ctx context.Context, userID string) error {
	return s.deleteUser(ctx, nil, userID)
}

func (s *Server) deleteUser(ctx context.Context, r *http.Request, userID string) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM identity_users WHERE user_id = ?", u.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrUserNotFound
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM identity_login_sessions WHERE user_id = ?", u.ID)
		return err
	})
	if errors.Is(err, ErrUserNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete user %s: %w", u.ID, err)
	}
	if err := s.revokeUserGrants(ctx, u.ID, "user_deleted"); err != nil {
		return err
	}
	return s.emitUserChange(ctx, r, actAccountDelete, u, "user deleted")
}

// UnlockUser clears a user's lockout and failure count.
func (s *Server) UnlockUser(ctx context.Context, userID string) error {
	return s.unlockUser(ctx, nil, userID)
}

func (s *Server) unlockUser(ctx context.Context, r *http.Request, userID string) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return err
	}
	if err := s.updateUser(ctx, u.ID, "failed_logins = 0, last_failure_at = 0, locked_until = 0"); err != nil {
		return err
	}
	u.LockedUntil = time.Time{}
	return s.emitUserChange(ctx, r, actAccountEnable, u, "user unlocked")
}

// updateUser sets columns of a user row (set is a fixed SQL fragment) and
// updated_at.
func (s *Server) updateUser(ctx context.Context, userID, set string, args ...any) error {
	args = append(args, s.now().UnixMilli(), userID)
	res, err := s.db.ExecContext(ctx, "UPDATE identity_users SET "+set+", updated_at = ? WHERE user_id = ?", args...)
	if err != nil {
		return fmt.Errorf("update user %s: %w", userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserNotFound
	}
	return nil
}

// revokeUserGrants revokes every live grant whose subject is the user.
func (s *Server) revokeUserGrants(ctx context.Context, userID, reason string) error {
	rows, err := s.db.QueryContext(ctx, "SELECT grant_id FROM identity_grants WHERE subject = ? AND revoked_at IS NULL", userID)
	if err != nil {
		return fmt.Errorf("find grants of user %s: %w", userID, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("find grants of user %s: %w", userID, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find grants of user %s: %w", userID, err)
	}
	for _, id := range ids {
		if err := s.revokeGrant(ctx, id, reason); err != nil {
			return fmt.Errorf("revoke grant %s of user %s: %w", id, userID, err)
		}
	}
	return nil
}

// emitUserChange audits a change to user u. r is the admin API request,
// or nil for a change made by the process itself (dev mode).
func (s *Server) emitUserChange(ctx context.Context, r *http.Request, activity int, u *User, msg string) error {
	ev := newEvent(classAccountChange, activity, true, "")
	ev.Message = msg
	if r != nil {
		ev.Actor = s.adminActor(ctx)
	} else {
		ev.Actor = &audit.Actor{AppName: "bulwark"}
	}
	ev.Resources = []audit.Resource{{Type: "user", UID: u.ID, Name: u.Username}}
	return s.emit(ctx, r, ev)
}
