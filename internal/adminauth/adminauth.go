// Package adminauth manages the control plane's bootstrap admin
// credential: generated once at first start, shown once, stored only as a
// SHA-256 hash, checked in constant time on every request that needs it.
package adminauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Prefix starts every admin credential, so that scanners and the log
// redactor recognise one.
const Prefix = "bwk_"

// A credential is Prefix + 16 hex characters of ID + "_" + 43 characters of
// base64url secret (256 bits). The ID is not secret: it names the
// credential in logs and audit events.
const (
	idBytes     = 8
	secretBytes = 32
)

// ErrInvalid is returned for a credential that is malformed, unknown,
// revoked or wrong; callers cannot tell which.
var ErrInvalid = errors.New("invalid admin credential")

// Authenticator checks admin credentials against their stored hashes.
type Authenticator struct {
	db       *store.DB
	log      *slog.Logger
	failures prometheus.Counter
	now      func() time.Time
}

// New returns an Authenticator over db. reg may be nil.
func New(db *store.DB, logger *slog.Logger, reg prometheus.Registerer) (*Authenticator, error) {
	if db == nil {
		return nil, errors.New("adminauth: no store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{db: db, log: logger, now: time.Now,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_admin_auth_failures_total", Help: "Requests refused for a missing or invalid admin credential."}),
	}
	if reg != nil {
		if err := reg.Register(a.failures); err != nil {
			return nil, fmt.Errorf("adminauth: register metrics: %w", err)
		}
	}
	return a, nil
}

// EnsureCredential creates the first admin credential if none exists and
// returns it; it returns "" when one exists already (the secret is never
// recoverable after the first start).
func (a *Authenticator) EnsureCredential(ctx context.Context) (string, error) {
	var cred string
	err := a.db.InTx(ctx, func(tx *store.Tx) error {
		cred = ""
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM admin_credentials WHERE revoked_at IS NULL").Scan(&n); err != nil {
			return fmt.Errorf("count admin credentials: %w", err)
		}
		if n > 0 {
			return nil
		}
		c, id, hash, err := generate()
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO admin_credentials (id, hash, created_at) VALUES (?, ?, ?)",
			id, hash, a.now().Unix()); err != nil {
			return fmt.Errorf("store admin credential: %w", err)
		}
		cred = c
		return nil
	})
	return cred, err
}

func generate() (cred, id string, hash []byte, err error) {
	var idb [idBytes]byte
	var sec [secretBytes]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", nil, fmt.Errorf("generate admin credential: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", "", nil, fmt.Errorf("generate admin credential: %w", err)
	}
	id = hex.EncodeToString(idb[:])
	cred = Prefix + id + "_" + base64.RawURLEncoding.EncodeToString(sec[:])
	sum := sha256.Sum256([]byte(cred))
	return cred, id, sum[:], nil
}

// parse splits a credential into its ID, checking its shape.
func parse(cred string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(cred, Prefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 2*idBytes || len(secret) != base64.RawURLEncoding.EncodedLen(secretBytes) {
		return "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", false
	}
	return id, true
}

// Check returns the ID of cred if it is a valid, unrevoked admin credential.
func (a *Authenticator) Check(ctx context.Context, cred string) (string, error) {
	id, ok := parse(cred)
	if !ok {
		return "", ErrInvalid
	}
	var (
		stored  []byte
		revoked sql.NullInt64
	)
	err := a.db.QueryRowContext(ctx, "SELECT hash, revoked_at FROM admin_credentials WHERE id = ?", id).Scan(&stored, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrInvalid
	}
	if err != nil {
		return "", fmt.Errorf("look up admin credential: %w", err)
	}
	sum := sha256.Sum256([]byte(cred))
	if subtle.ConstantTimeCompare(sum[:], stored) != 1 || revoked.Valid {
		return "", ErrInvalid
	}
	return id, nil
}

type ctxKey struct{}

// CredentialID returns the admin credential ID that authenticated the
// request carried by ctx, or "".
func CredentialID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// Require wraps next so that it runs only for requests carrying a valid
// admin credential as "Authorization: Bearer <credential>". Refusals are
// 401 with a stable code, counted, and logged with the client address and
// the credential ID if one could be parsed — never the credential.
func (a *Authenticator) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, ok := bearer(r)
		if !ok {
			a.refuse(w, r, "missing bearer credential", "")
			return
		}
		id, err := a.Check(r.Context(), cred)
		if errors.Is(err, ErrInvalid) {
			claimed, _ := parse(cred)
			a.refuse(w, r, "invalid admin credential", claimed)
			return
		}
		if err != nil {
			httpapi.WriteError(w, r, a.log, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

func (a *Authenticator) refuse(w http.ResponseWriter, r *http.Request, reason, claimedID string) {
	a.failures.Inc()
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	a.log.WarnContext(r.Context(), "admin authentication refused",
		"reason", reason, "credential_id", claimedID, "src_ip", host,
		"method", r.Method, "path", r.URL.Path, "request_id", httpapi.RequestID(r.Context()))
	httpapi.WriteError(w, r, a.log, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated,
		"a valid admin credential is required (Authorization: Bearer bwk_...)"))
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" || len(cred) > 256 {
		return "", false
	}
	return strings.TrimSpace(cred), true
}
