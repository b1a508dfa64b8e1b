package policy

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Defaults of RepositoryConfig.
const (
	DefaultBundleTTL    = time.Hour
	DefaultPollInterval = 2 * time.Second
	// MaxCommentLen bounds a push's comment, in bytes.
	MaxCommentLen = 1024
	// keptBundles is how many signed bundles the store keeps.
	keptBundles = 10
	// BundleKeyName is the name of the bundle-signing key in the KeyStore.
	BundleKeyName = "policy-bundle"
)

// Errors of the repository. API handlers map them to statuses.
var (
	// ErrNotFound: no such policy version or entity.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a request the repository refuses (bad argument, nothing
	// to roll back to, malformed entities).
	ErrInvalid = errors.New("invalid request")
)

// RepositoryConfig configures a Repository. The zero value is usable.
type RepositoryConfig struct {
	// Issuer names this control plane in every bundle manifest.
	Issuer string
	// BundleTTL is how long a signed bundle is valid (config
	// policy.bundle_ttl; default DefaultBundleTTL). Bundles are re-signed
	// at half of it.
	BundleTTL time.Duration
	// PollInterval is how often Run looks for changes made by other
	// replicas sharing the database (default DefaultPollInterval).
	PollInterval time.Duration
}

// KeyStore is the sealed key store (internal/keys.Sealed satisfies it).
type KeyStore interface {
	LoadOrCreate(name string, gen func() ([]byte, error)) ([]byte, error)
}

// RepositoryDeps are the Repository's dependencies. DB, Audit and Keys are
// required.
type RepositoryDeps struct {
	DB      *store.DB
	Audit   *audit.Log
	Keys    KeyStore
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Actor is who makes a change: Kind "admin" with the admin credential ID,
// or "workload" with a SPIFFE ID. It is the Caller of the decision service.
type Actor = Caller

// VersionInfo describes one version of the policy set.
type VersionInfo struct {
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	// Author is "kind:id" of the actor that made the version.
	Author  string `json:"author"`
	Comment string `json:"comment"`
	// Digest is the hex SHA-256 of the files (JSON object, sorted keys).
	Digest string `json:"digest"`
	// Policies is the number of policy statements.
	Policies int `json:"policies"`
	// RollbackOf is the version whose files a rollback restored.
	RollbackOf int64 `json:"rollback_of,omitempty"`
	// Active marks the version decisions are made with.
	Active bool `json:"active"`
	// BundleVersion, in the answer to a push or rollback, is the version
	// of the first bundle that carries this policy version.
	BundleVersion int64 `json:"bundle_version,omitempty"`
}

// Repository is the policy repository: versioned policy sets, the entity
// store and the signed bundles built from them, in the store shared by
// every control plane replica. It is the decision service's Source.
type Repository struct {
	cfg     RepositoryConfig
	db      *store.DB
	audit   *audit.Log
	log     *slog.Logger
	now     func() time.Time
	schema  *Schema
	schemaT string
	key     ed25519.PrivateKey
	keyID   string

	// mu serialises installing a new repoState; readers use cur.
	mu   sync.Mutex
	cur  atomic.Pointer[repoState]
	keys atomic.Pointer[[]repoSigningKey]
	// done is closed when Run returns, ending every WaitBundle.
	done     chan struct{}
	doneOnce sync.Once

	metrics *repoMetrics
}

// NewRepository loads the repository's repoState from the store, creating the
// bundle-signing key at first start, and signs a bundle if there is none
// (or the newest one expired).
func NewRepository(ctx context.Context, cfg RepositoryConfig, deps RepositoryDeps) (*Repository, error) {
	switch {
	case deps.DB == nil:
		return nil, errors.New("policy repository: no store")
	case deps.Audit == nil:
		return nil, errors.New("policy repository: no audit log")
	case deps.Keys == nil:
		return nil, errors.New("policy repository: no key store")
	case cfg.BundleTTL < 0:
		return nil, fmt.Errorf("policy repository: bundle TTL %s is negative", cfg.BundleTTL)
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("policy repository: poll interval %s is negative", cfg.PollInterval)
	}
	if cfg.BundleTTL == 0 {
		cfg.BundleTTL = DefaultBundleTTL
	}
	if cfg.BundleTTL < 2*time.Second {
		return nil, fmt.Errorf("policy repository: bundle TTL %s is shorter than 2s", cfg.BundleTTL)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	s, err := DefaultSchema()
	if err != nil {
		return nil, fmt.Errorf("policy repository: %w", err)
	}
	r := &Repository{cfg: cfg, db: deps.DB, audit: deps.Audit, log: deps.Logger, now: deps.Now,
		schema: s, schemaT: string(schemaText), done: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	created := false
	seed, err := deps.Keys.LoadOrCreate(BundleKeyName, func() ([]byte, error) {
		_, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		created = true
		return priv.Seed(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy repository: bundle signing key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("policy repository: bundle signing key %q is %d bytes, want %d", BundleKeyName, len(seed), ed25519.SeedSize)
	}
	r.key = ed25519.NewKeyFromSeed(seed)
	pub := r.key.Public().(ed25519.PublicKey)
	r.keyID = bundleKeyID(pub)
	if err := r.registerKey(ctx, pub); err != nil {
		return nil, err
	}
	if created {
		if err := r.emit(ctx, keyCreatedEvent(r.keyID)); err != nil {
			return nil, fmt.Errorf("policy repository: %w", err)
		}
	}
	if deps.Metrics != nil {
		m, err := newRepoMetrics(deps.Metrics, r)
		if err != nil {
			return nil, err
		}
		r.metrics = m
	}
	if err := r.refresh(ctx, true); err != nil {
		return nil, fmt.Errorf("policy repository: %w", err)
	}
	return r, nil
}

// Run keeps the repository current until ctx ends: every PollInterval it
// learns the signing keys of replicas that started since (so that this
// replica publishes them to clients even when it never loaded a bundle they
// signed), installs bundles signed by other replicas and re-signs the bundle
// when half of its lifetime has passed. It returns nil when ctx ends.
func (r *Repository) Run(ctx context.Context) error {
	defer r.doneOnce.Do(func() { close(r.done) })
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := r.loadKeys(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("policy: load the replicas' signing keys", slog.Any(logKeyRepoErr, err))
		}
		if err := r.refresh(ctx, false); err != nil && ctx.Err() == nil {
			r.log.Warn("policy: refresh the bundle", slog.Any(logKeyRepoErr, err))
		}
	}
}

// Snapshot returns the current snapshot; it is never nil.
func (r *Repository) Snapshot() *Snapshot { return r.cur.Load().snap }

var _ Source = (*Repository)(nil)

// Push validates files (file name -> Cedar text) and, if every file is
// valid, makes them the new active policy version and signs a bundle that
// carries it before returning. If anything is wrong the error is a
// *LoadError listing every problem, and nothing changes. An empty set is
// legal (it denies everything); a nil map is not.
func (r *Repository) Push(ctx context.Context, files map[string]string, comment string, actor Actor) (_ VersionInfo, err error) {
	defer func() { r.metrics.count("push", err) }()
	if files == nil {
		return VersionInfo{}, fmt.Errorf("push policies: %w: no files", ErrInvalid)
	}
	if len(comment) > MaxCommentLen || !utf8.ValidString(comment) {
		return VersionInfo{}, fmt.Errorf("push policies: %w: the comment must be valid UTF-8 of at most %d bytes", ErrInvalid, MaxCommentLen)
	}
	set, problems := CheckFiles(files, r.schema)
	if len(problems) > 0 {
		r.emitRefusal(ctx, pushRefusedEvent(actor, repoActCreate, problems))
		return VersionInfo{}, &LoadError{Problems: problems}
	}
	info, err := r.addVersion(ctx, files, set.Len(), comment, 0, actor)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("push policies: %w", err)
	}
	if err := r.emit(ctx, pushEvent(actor, info, files)); err != nil {
		return info, fmt.Errorf("push policies: %w", err)
	}
	return info, nil
}

// Rollback makes the files of version to active again, as a new version
// whose RollbackOf is to (history stays linear, versions only grow). to 0
// means the version before the active one. The old files are validated
// against the current schema first; a *LoadError means they no longer
// are valid and nothing changed.
func (r *Repository) Rollback(ctx context.Context, to int64, actor Actor) (_ VersionInfo, err error) {
	defer func() { r.metrics.count("rollback", err) }()
	if to < 0 {
		return VersionInfo{}, fmt.Errorf("roll back: %w: version %d is negative", ErrInvalid, to)
	}
	active, err := r.activeVersion(ctx)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("roll back: %w", err)
	}
	if to == 0 {
		to = active - 1
		if to < 1 {
			return VersionInfo{}, fmt.Errorf("roll back: %w: no version before the active one (%d)", ErrInvalid, active)
		}
	}
	if to == active {
		return VersionInfo{}, fmt.Errorf("roll back: %w: version %d is already active", ErrInvalid, to)
	}
	_, files, err := r.Version(ctx, to)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("roll back: %w", err)
	}
	set, problems := CheckFiles(files, r.schema)
	if len(problems) > 0 {
		r.emitRefusal(ctx, pushRefusedEvent(actor, repoActUpdate, problems))
		return VersionInfo{}, &LoadError{Problems: problems}
	}
	info, err := r.addVersion(ctx, files, set.Len(), fmt.Sprintf("rollback to version %d", to), to, actor)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("roll back: %w", err)
	}
	if err := r.emit(ctx, rollbackEvent(actor, info)); err != nil {
		return info, fmt.Errorf("roll back: %w", err)
	}
	return info, nil
}

// addVersion stores a new active version and signs its bundle.
func (r *Repository) addVersion(ctx context.Context, files map[string]string, policies int, comment string, rollbackOf int64, actor Actor) (VersionInfo, error) {
	filesJSON, err := json.Marshal(files)
	if err != nil {
		return VersionInfo{}, fmt.Errorf("encode files: %w", err)
	}
	sum := sha256.Sum256(filesJSON)
	info := VersionInfo{Author: repoAuthor(actor), Comment: comment, Digest: hex.EncodeToString(sum[:]), Policies: policies,
		RollbackOf: rollbackOf, Active: true}
	st, err := r.commit(ctx, func(tx *store.Tx, h *repoHead) error {
		var last int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM policy_versions").Scan(&last); err != nil {
			return fmt.Errorf("read the newest policy version: %w", err)
		}
		info.Version = last + 1
		info.CreatedAt = time.UnixMilli(r.now().UnixMilli()).UTC()
		var rb any
		if rollbackOf > 0 {
			rb = rollbackOf
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_versions (version, created_at, author, comment, digest, files, policy_count, rollback_of)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, info.Version, info.CreatedAt.UnixMilli(), info.Author, comment, info.Digest,
			string(filesJSON), policies, rb); err != nil {
			return fmt.Errorf("store policy version: %w", err)
		}
		h.policy = info.Version
		return nil
	})
	if err != nil {
		return VersionInfo{}, err
	}
	info.BundleVersion = st.version
	return info, nil
}

func repoAuthor(a Actor) string {
	if a.Kind == "" && a.ID == "" {
		return "system"
	}
	return a.Kind + ":" + a.ID
}

func (r *Repository) activeVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := r.db.QueryRowContext(ctx, "SELECT policy_version FROM policy_head WHERE id = 1").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the active policy version: %w", err)
	}
	return v, nil
}

const versionColumns = "version, created_at, author, comment, digest, policy_count, rollback_of"

func scanVersionRow(sc interface{ Scan(...any) error }, active int64, extra ...any) (VersionInfo, error) {
	var (
		v       VersionInfo
		created int64
		rb      sql.NullInt64
	)
	dest := append([]any{&v.Version, &created, &v.Author, &v.Comment, &v.Digest, &v.Policies, &rb}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return VersionInfo{}, err
	}
	v.CreatedAt = time.UnixMilli(created).UTC()
	v.RollbackOf = rb.Int64
	v.Active = v.Version == active
	return v, nil
}

// Versions returns every policy version, oldest first.
func (r *Repository) Versions(ctx context.Context) ([]VersionInfo, error) {
	active, err := r.activeVersion(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := r.db.QueryContext(ctx, "SELECT "+versionColumns+" FROM policy_versions ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("list policy versions: %w", err)
	}
	defer rows.Close()
	out := []VersionInfo{}
	for rows.Next() {
		v, err := scanVersionRow(rows, active)
		if err != nil {
			return nil, fmt.Errorf("list policy versions: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list policy versions: %w", err)
	}
	return out, nil
}

// Version returns one policy version and its files; ErrNotFound if there
// is no such version.
func (r *Repository) Version(ctx context.Context, version int64) (VersionInfo, map[string]string, error) {
	active, err := r.activeVersion(ctx)
	if err != nil {
		return VersionInfo{}, nil, err
	}
	var filesJSON string
	v, err := scanVersionRow(r.db.QueryRowContext(ctx, "SELECT "+versionColumns+", files FROM policy_versions WHERE version = ?", version),
		active, &filesJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return VersionInfo{}, nil, fmt.Errorf("policy version %d: %w", version, ErrNotFound)
	}
	if err != nil {
		return VersionInfo{}, nil, fmt.Errorf("read policy version %d: %w", version, err)
	}
	files := map[string]string{}
	if err := json.Unmarshal([]byte(filesJSON), &files); err != nil {
		return VersionInfo{}, nil, fmt.Errorf("decode policy version %d: %w", version, err)
	}
	return v, files, nil
}

// Active returns the active policy version and its files; ErrNotFound
// before the first push.
func (r *Repository) Active(ctx context.Context) (VersionInfo, map[string]string, error) {
	active, err := r.activeVersion(ctx)
	if err != nil {
		return VersionInfo{}, nil, err
	}
	if active == 0 {
		return VersionInfo{}, nil, fmt.Errorf("active policy version: %w: nothing pushed yet", ErrNotFound)
	}
	return r.Version(ctx, active)
}

// head is the policy_head row.
type repoHead struct {
	policy, entities, bundle int64
}

// lockHead reads the head row and, on PostgreSQL, locks it so that
// replicas change the repository one after another. (SQLite write
// transactions are already exclusive.)
func lockHead(ctx context.Context, tx *store.Tx) (repoHead, error) {
	q := "SELECT policy_version, entities_version, bundle_version FROM policy_head WHERE id = 1"
	if tx.Driver() == store.Postgres {
		q += " FOR UPDATE"
	}
	var h repoHead
	if err := tx.QueryRowContext(ctx, q).Scan(&h.policy, &h.entities, &h.bundle); err != nil {
		return repoHead{}, fmt.Errorf("lock the policy head: %w", err)
	}
	return h, nil
}

// logKeyRepoErr is the slog attribute key of errors.
const logKeyRepoErr = "error"

// clipRepo shortens s for an error message or an event.
func clipRepo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// qualify adds the Bulwark namespace to an entity type without one.
func qualifyType(t string) string {
	if t == "" || strings.Contains(t, "::") {
		return t
	}
	return Namespace + "::" + t
}
