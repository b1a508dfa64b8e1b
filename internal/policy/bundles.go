package policy

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// ErrStopped is returned by WaitBundle once the repository's Run has ended.
var ErrStopped = errors.New("policy repository stopped")

// repoState is what the repository serves: the newest signed bundle it knows
// and the snapshot built from the same bytes. It is immutable.
type repoState struct {
	raw       []byte
	version   int64
	issuedAt  time.Time
	expiresAt time.Time
	snap      *Snapshot
	// changed is closed when a newer repoState replaces this one.
	changed chan struct{}
}

type repoSigningKey struct {
	id  string
	pub ed25519.PublicKey
}

func bundleKeyID(pub ed25519.PublicKey) string { return authz.KeyID(pub) }

// Bundle returns the current signed bundle (the JSON of an authz.Bundle)
// and its version.
func (r *Repository) Bundle() (raw []byte, version int64) {
	st := r.cur.Load()
	return st.raw, st.version
}

// WaitBundle returns the current bundle as soon as its version is greater
// than after; it fails when ctx ends first, or with ErrStopped when Run
// has returned.
func (r *Repository) WaitBundle(ctx context.Context, after int64) ([]byte, int64, error) {
	for {
		st := r.cur.Load()
		if st.version > after {
			return st.raw, st.version, nil
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-r.done:
			return nil, 0, ErrStopped
		}
	}
}

// PublicKeys returns the bundle-signing public keys of every replica
// sharing the store, this replica's first.
func (r *Repository) PublicKeys() []ed25519.PublicKey {
	keys := *r.keys.Load()
	out := make([]ed25519.PublicKey, 0, len(keys))
	for _, k := range keys {
		if k.id == r.keyID {
			out = append([]ed25519.PublicKey{k.pub}, out...)
			continue
		}
		out = append(out, k.pub)
	}
	return out
}

// registerKey records this replica's public key in the store and loads
// every replica's.
func (r *Repository) registerKey(ctx context.Context, pub ed25519.PublicKey) error {
	if _, err := r.db.ExecContext(ctx, `INSERT INTO policy_signing_keys (key_id, public_key, created_at) VALUES (?, ?, ?)
		ON CONFLICT (key_id) DO NOTHING`, r.keyID, []byte(pub), r.now().UnixMilli()); err != nil {
		return fmt.Errorf("policy repository: register the bundle signing key: %w", err)
	}
	return r.loadKeys(ctx)
}

func (r *Repository) loadKeys(ctx context.Context) error {
	rows, err := r.db.QueryContext(ctx, "SELECT key_id, public_key FROM policy_signing_keys ORDER BY created_at, key_id")
	if err != nil {
		return fmt.Errorf("load bundle signing keys: %w", err)
	}
	defer rows.Close()
	var keys []repoSigningKey
	for rows.Next() {
		var k repoSigningKey
		var pub []byte
		if err := rows.Scan(&k.id, &pub); err != nil {
			return fmt.Errorf("load bundle signing keys: %w", err)
		}
		if len(pub) != ed25519.PublicKeySize || bundleKeyID(pub) != k.id {
			return fmt.Errorf("load bundle signing keys: key %q is malformed", k.id)
		}
		k.pub = ed25519.PublicKey(pub)
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load bundle signing keys: %w", err)
	}
	r.keys.Store(&keys)
	return nil
}

func (r *Repository) trusted() map[string]ed25519.PublicKey {
	keys := *r.keys.Load()
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		m[k.id] = k.pub
	}
	return m
}

// errSuperseded: another replica signed a bundle first; nothing to do.
var errSuperseded = errors.New("bundle superseded by another replica")

// refresh installs a newer bundle signed by another replica, and signs a
// new bundle when there is none yet, the newest cannot be loaded, or half
// of its lifetime has passed.
func (r *Repository) refresh(ctx context.Context, startup bool) error {
	var h repoHead
	if err := r.db.QueryRowContext(ctx, "SELECT policy_version, entities_version, bundle_version FROM policy_head WHERE id = 1").
		Scan(&h.policy, &h.entities, &h.bundle); err != nil {
		return fmt.Errorf("read the policy head: %w", err)
	}
	cur := r.cur.Load()
	force := cur == nil
	if h.bundle > 0 && (cur == nil || h.bundle > cur.version) {
		st, err := r.loadBundle(ctx, h.bundle)
		switch {
		case err == nil:
			r.install(st)
			cur, force = r.cur.Load(), false
		case errors.Is(err, authz.ErrExpired) && startup:
			// Expired while no replica ran: sign a fresh one below.
			force = true
		default:
			r.log.Warn("policy: load the newest bundle; signing a new one", slog.Int64(logKeyBundleVersion, h.bundle), slog.Any(logKeyRepoErr, err))
			force = true
		}
	}
	if !force && !r.needsResign(cur) {
		return nil
	}
	_, err := r.commit(ctx, func(_ *store.Tx, h *repoHead) error {
		if !force && h.bundle != cur.version {
			return errSuperseded
		}
		return nil
	})
	if errors.Is(err, errSuperseded) {
		return nil
	}
	return err
}

const logKeyBundleVersion = "version"

func (r *Repository) needsResign(st *repoState) bool {
	half := st.expiresAt.Sub(st.issuedAt) / 2
	return !r.now().Before(st.issuedAt.Add(half))
}

// loadBundle reads a stored bundle and verifies it against the keys of
// every replica.
func (r *Repository) loadBundle(ctx context.Context, version int64) (*repoState, error) {
	var raw []byte
	if err := r.db.QueryRowContext(ctx, "SELECT data FROM policy_bundles WHERE version = ?", version).Scan(&raw); err != nil {
		return nil, fmt.Errorf("read bundle %d: %w", version, err)
	}
	vb, err := authz.VerifyBundle(raw, r.trusted(), r.now(), 0)
	if errors.Is(err, authz.ErrUnknownKey) {
		// A replica that started after us: learn its key.
		if err := r.loadKeys(ctx); err != nil {
			return nil, err
		}
		vb, err = authz.VerifyBundle(raw, r.trusted(), r.now(), 0)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle %d: %w", version, err)
	}
	return repoStateFrom(raw, vb)
}

func repoStateFrom(raw []byte, vb *authz.VerifiedBundle) (*repoState, error) {
	ev, err := authz.NewEvaluatorFromBundle(vb)
	if err != nil {
		return nil, fmt.Errorf("bundle %d: %w", vb.Manifest.Version, err)
	}
	m := vb.Manifest
	return &repoState{raw: raw, version: m.Version, issuedAt: m.IssuedAt, expiresAt: m.ExpiresAt,
		snap: &Snapshot{BundleVersion: m.Version, PolicyVersion: m.PolicyVersion, EntitiesVersion: m.EntitiesVersion, Evaluator: ev}}, nil
}

// install makes st current if it is newer than the current repoState, and
// wakes the waiters of WaitBundle.
func (r *Repository) install(st *repoState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.cur.Load()
	if cur != nil && st.version <= cur.version {
		return
	}
	st.changed = make(chan struct{})
	r.cur.Store(st)
	if cur != nil {
		close(cur.changed)
	}
}

// commit runs mutate in one transaction with the head locked, then signs a
// bundle of the resulting policy version and entities, stores it with the
// new head, and installs it once committed. mutate updates h for what it
// changed.
func (r *Repository) commit(ctx context.Context, mutate func(tx *store.Tx, h *repoHead) error) (*repoState, error) {
	var st *repoState
	err := r.db.InTx(ctx, func(tx *store.Tx) error {
		h, err := lockHead(ctx, tx)
		if err != nil {
			return err
		}
		if err := mutate(tx, &h); err != nil {
			return err
		}
		files, err := readVersionFiles(ctx, tx, h.policy)
		if err != nil {
			return err
		}
		ents, err := readEntityArray(ctx, tx, "")
		if err != nil {
			return err
		}
		h.bundle++
		st, err = r.sign(h, files, ents)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO policy_bundles (version, data, created_at) VALUES (?, ?, ?)",
			h.bundle, st.raw, r.now().UnixMilli()); err != nil {
			return fmt.Errorf("store bundle: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM policy_bundles WHERE version <= ?", h.bundle-keptBundles); err != nil {
			return fmt.Errorf("prune bundles: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE policy_head SET policy_version = ?, entities_version = ?, bundle_version = ? WHERE id = 1",
			h.policy, h.entities, h.bundle); err != nil {
			return fmt.Errorf("update the policy head: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.install(st)
	return st, nil
}

// readVersionFiles returns the files of a policy version (none for version 0).
func readVersionFiles(ctx context.Context, tx *store.Tx, version int64) (map[string]string, error) {
	files := map[string]string{}
	if version == 0 {
		return files, nil
	}
	var text string
	if err := tx.QueryRowContext(ctx, "SELECT files FROM policy_versions WHERE version = ?", version).Scan(&text); err != nil {
		return nil, fmt.Errorf("read policy version %d: %w", version, err)
	}
	if err := json.Unmarshal([]byte(text), &files); err != nil {
		return nil, fmt.Errorf("decode policy version %d: %w", version, err)
	}
	return files, nil
}

// sign signs the bundle of h's versions, then verifies its own encoding
// and builds the snapshot from the verified bytes, so that the central
// decision service and an embedded evaluator decide from the same input.
func (r *Repository) sign(h repoHead, files map[string]string, entities []byte) (*repoState, error) {
	now := r.now()
	b, err := authz.SignBundle(authz.BundleContent{Version: h.bundle, PolicyVersion: h.policy, EntitiesVersion: h.entities,
		Issuer: r.cfg.Issuer, IssuedAt: now, ExpiresAt: now.Add(r.cfg.BundleTTL),
		Policies: files, Schema: r.schemaT, Entities: entities}, r.key)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(b); err != nil {
		return nil, fmt.Errorf("encode bundle: %w", err)
	}
	raw := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	vb, err := authz.VerifyBundle(raw, map[string]ed25519.PublicKey{r.keyID: r.key.Public().(ed25519.PublicKey)}, now, 0)
	if err != nil {
		return nil, fmt.Errorf("check the signed bundle: %w", err)
	}
	return repoStateFrom(raw, vb)
}

// repoMetrics are the repository's Prometheus metrics.
type repoMetrics struct {
	changes *prometheus.CounterVec
}

func newRepoMetrics(reg prometheus.Registerer, r *Repository) (*repoMetrics, error) {
	m := &repoMetrics{changes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_policy_changes_total",
		Help: "Changes to the policy repository, by kind (push, rollback, entities) and result (ok, refused, error).",
	}, []string{"kind", "result"})}
	gauge := func(name, help string, f func(*Snapshot) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			st := r.cur.Load()
			if st == nil {
				return 0
			}
			return float64(f(st.snap))
		})
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_policy_bundle_expiry_seconds",
		Help: "Seconds until the current signed policy bundle expires.",
	}, func() float64 {
		st := r.cur.Load()
		if st == nil {
			return 0
		}
		return st.expiresAt.Sub(r.now()).Seconds()
	})
	for _, c := range []prometheus.Collector{m.changes, expiry,
		gauge("bulwark_policy_bundle_version", "Version of the current signed policy bundle.", func(s *Snapshot) int64 { return s.BundleVersion }),
		gauge("bulwark_policy_active_version", "Version of the active policy set (0: none).", func(s *Snapshot) int64 { return s.PolicyVersion }),
		gauge("bulwark_policy_entities_version", "Version of the entity store.", func(s *Snapshot) int64 { return s.EntitiesVersion }),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("policy repository: register metrics: %w", err)
		}
	}
	return m, nil
}

// count records a change outcome; m may be nil.
func (m *repoMetrics) count(kind string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	var le *LoadError
	var ee *EntitiesError
	switch {
	case err == nil:
	case errors.As(err, &le), errors.As(err, &ee), errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound):
		result = "refused"
	default:
		result = "error"
	}
	m.changes.WithLabelValues(kind, result).Inc()
}
