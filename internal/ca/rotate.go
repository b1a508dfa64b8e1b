package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Names of the dev root in the root key store.
const (
	devRootKeyName  = "ca-root"
	devRootCertName = "ca-root-cert"
	devRootTTL      = 10 * 365 * 24 * time.Hour
)

// Rotate makes a new intermediate signed by root (nil root and rootCert:
// the sealed dev root) and a new JWT-SVID key. New SVIDs are signed with
// them at once; the previous intermediate and JWT key stay trusted until
// now + RotationOverlap and are then dropped from the bundle.
func (a *Authority) Rotate(ctx context.Context, root crypto.Signer, rootCert *x509.Certificate) error {
	_, err := a.rotate(ctx, root, rootCert, nil)
	return err
}

// rotate is Rotate. With ifCurrent set it rotates only if the current
// intermediate is still *ifCurrent ("": there is none), so that replicas
// starting or renewing at once rotate only once.
func (a *Authority) rotate(ctx context.Context, root crypto.Signer, rootCert *x509.Certificate, ifCurrent *string) (bool, error) {
	now := a.now()
	actor := actorFor(ctx, spiffeid.ID{})
	refuse := func(err error) (bool, error) {
		a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actor,
			audit.Resource{Type: resIntermediate}))
		return false, err
	}
	switch {
	case root == nil && rootCert == nil:
		// The dev root is created only for a CA that has no intermediate
		// yet, and used only while it signed the current one: a CA under
		// an offline root is never moved to a key the server holds.
		st := a.state.Load()
		first := st == nil || st.signer == nil
		var err error
		if rootCert, root, err = a.devRoot(now, first); err != nil {
			return refuse(fmt.Errorf("ca rotation: %w", err))
		}
		if !first && st.signer.cert.CheckSignatureFrom(rootCert) != nil {
			return refuse(fmt.Errorf("ca rotation: %w: the CA's intermediate is not signed by the dev root; rotate with the offline root", ErrInvalid))
		}
	case root == nil || rootCert == nil:
		return refuse(fmt.Errorf("ca rotation: %w: give both the root certificate and its key", ErrInvalid))
	}
	if err := checkRoot(a.cfg.TrustDomain, rootCert, root, now); err != nil {
		return refuse(fmt.Errorf("ca rotation: %w", err))
	}
	cert, key, err := newIntermediateCert(a.cfg.TrustDomain, root, rootCert, a.cfg.IntermediateTTL, now)
	if err != nil {
		return refuse(fmt.Errorf("ca rotation: %w", err))
	}
	if !cert.NotAfter.After(now.Add(a.cfg.SVIDTTL)) {
		return refuse(fmt.Errorf("ca rotation: %w: the root expires at %s, within one SVID lifetime", ErrInvalid,
			rootCert.NotAfter.UTC().Format(time.RFC3339)))
	}
	id := "int_" + randomHex(8)
	sealedInter, err := a.sealKey(key, intermediateSealContext(id))
	if err != nil {
		return false, fmt.Errorf("ca rotation: %w", err)
	}
	return a.activate(ctx, actor, id, cert, sealedInter, ifCurrent, "")
}

// activate makes cert (whose key is sealed as sealedInter under id) the
// signing intermediate, with a new JWT-SVID key, and retires the previous
// ones at now + RotationOverlap, in one transaction that also deletes the
// pending row pendingID (if any). With ifCurrent it does nothing (false)
// unless the current intermediate is still *ifCurrent. Audited.
func (a *Authority) activate(ctx context.Context, actor *audit.Actor, id string, cert *x509.Certificate, sealedInter []byte,
	ifCurrent *string, pendingID string) (bool, error) {
	jwtPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("ca rotation: JWT key: %w", err)
	}
	kid := randomHex(16)
	sealedJWT, err := a.sealKey(jwtPriv, jwtKeySealContext(kid))
	if err != nil {
		return false, fmt.Errorf("ca rotation: %w", err)
	}
	now := a.now()
	nowMs, until := now.UnixMilli(), now.Add(a.cfg.RotationOverlap).UnixMilli()
	skipped := false
	err = a.db.InTx(ctx, func(tx *store.Tx) error {
		skipped = false
		if tx.Driver() == store.Postgres {
			if _, err := tx.ExecContext(ctx, "LOCK TABLE ca_intermediates, ca_jwt_keys IN EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		if ifCurrent != nil {
			var current string
			err := tx.QueryRowContext(ctx, "SELECT id FROM ca_intermediates WHERE trusted_until IS NULL ORDER BY created_at DESC, id DESC LIMIT 1").Scan(&current)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("current intermediate: %w", err)
			}
			if current != *ifCurrent {
				skipped = true
				return nil
			}
		}
		if pendingID != "" {
			res, err := tx.ExecContext(ctx, "DELETE FROM ca_pending_intermediates WHERE id = ?", pendingID)
			if err != nil {
				return fmt.Errorf("claim pending intermediate: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("claim pending intermediate: %w", ErrNotFound)
			}
		}
		for _, q := range []string{
			"UPDATE ca_intermediates SET trusted_until = ? WHERE trusted_until IS NULL",
			"UPDATE ca_jwt_keys SET trusted_until = ? WHERE trusted_until IS NULL",
		} {
			if _, err := tx.ExecContext(ctx, q, until); err != nil {
				return fmt.Errorf("retire previous keys: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ca_intermediates (id, cert_der, sealed_key, not_before, not_after, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, id, cert.Raw, sealedInter, cert.NotBefore.UnixMilli(), cert.NotAfter.UnixMilli(), nowMs); err != nil {
			return fmt.Errorf("insert intermediate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO ca_jwt_keys (kid, sealed_key, created_at) VALUES (?, ?, ?)", kid, sealedJWT, nowMs); err != nil {
			return fmt.Errorf("insert JWT key: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("ca rotation: %w", err)
	}
	if err := a.reload(ctx); err != nil {
		return false, err
	}
	if skipped {
		return false, nil
	}
	e := newEvent(classEntityManagement, actCreate, true, "CA rotation: new intermediate and JWT-SVID key", actor,
		audit.Resource{Type: resIntermediate, UID: id, Name: hex.EncodeToString(cert.SubjectKeyId)})
	e.Unmapped = map[string]any{"not_after": cert.NotAfter.UTC().Format(time.RFC3339), "jwt_kid": kid,
		"previous_trusted_until": time.UnixMilli(until).UTC().Format(time.RFC3339)}
	if err := a.emit(ctx, e); err != nil {
		return true, fmt.Errorf("ca rotation: %w", err)
	}
	return true, nil
}

// renewDevIntermediate rotates with the dev root when the signing
// intermediate was signed by it and has less than a rotation overlap plus
// an SVID lifetime left, so that a dev CA never expires unattended.
func (a *Authority) renewDevIntermediate(ctx context.Context) error {
	st := a.state.Load()
	if a.roots == nil || st.signer == nil {
		return nil
	}
	now := a.now()
	if st.signer.cert.NotAfter.Sub(now) > a.cfg.RotationOverlap+a.cfg.SVIDTTL {
		return nil
	}
	rootCert, _, err := a.devRoot(now, false)
	if errors.Is(err, errNoDevRoot) {
		err = nil
	}
	if err != nil {
		return err
	}
	if rootCert == nil || st.signer.cert.CheckSignatureFrom(rootCert) != nil {
		a.log.Warn("ca: the intermediate expires soon and was not signed by the dev root: rotate it with 'bulwark ca rotate'",
			slog.Time(logKeyNotAfter, st.signer.cert.NotAfter))
		return nil
	}
	id := st.signer.id
	_, err = a.rotate(ctx, nil, nil, &id)
	return err
}

// errNoDevRoot is a dev root that does not exist and may not be created.
var errNoDevRoot = fmt.Errorf("%w: no root given and no dev root: use 'bulwark ca rotate --root-cert --root-key'", ErrInvalid)

// devRoot returns the dev-mode root; with create it makes it (sealed in
// the root key store) if it does not exist yet.
func (a *Authority) devRoot(now time.Time, create bool) (*x509.Certificate, crypto.Signer, error) {
	if a.roots == nil {
		return nil, nil, errNoDevRoot
	}
	keyDER, err := a.roots.LoadOrCreate(devRootKeyName, func() ([]byte, error) {
		if !create {
			return nil, errNoDevRoot
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKCS8PrivateKey(k)
	})
	if errors.Is(err, errNoDevRoot) {
		return nil, nil, errNoDevRoot
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dev root key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("dev root key: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("dev root key: not a signing key")
	}
	certDER, err := a.roots.LoadOrCreate(devRootCertName, func() ([]byte, error) {
		c, err := selfSignRoot(a.cfg.TrustDomain, key, devRootTTL, now)
		if err != nil {
			return nil, err
		}
		return c.Raw, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dev root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("dev root certificate: %w", err)
	}
	return cert, key, nil
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b)
}
