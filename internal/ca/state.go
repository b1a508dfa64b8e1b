package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// caState is an immutable snapshot of the signing material, swapped
// atomically on reload so that issuance never takes a lock.
type caState struct {
	inters    []*intermediate // oldest first
	signer    *intermediate   // newest current intermediate; nil if none
	jwtKeys   []*jwtKey       // oldest first
	jwtSigner *jwtKey         // newest current JWT key; nil if none
	version   string          // identifies the rows the snapshot was built from
}

// intermediate is an intermediate CA certificate. key is set only for the
// signing one.
type intermediate struct {
	id           string
	cert         *x509.Certificate
	key          crypto.Signer
	createdAt    time.Time
	trustedUntil time.Time // zero: current
}

// trustedAt reports whether the intermediate belongs in the trust bundle at now.
func (in *intermediate) trustedAt(now time.Time) bool {
	if !now.Before(in.cert.NotAfter) {
		return false
	}
	return in.trustedUntil.IsZero() || now.Before(in.trustedUntil)
}

// jwtKey is a JWT-SVID signing key.
type jwtKey struct {
	kid          string
	key          *ecdsa.PrivateKey
	signer       jose.Signer
	createdAt    time.Time
	trustedUntil time.Time // zero: current
}

func intermediateSealContext(id string) string { return "ca-intermediate/" + id }
func jwtKeySealContext(kid string) string      { return "ca-jwt-key/" + kid }

// reload rebuilds the state from the database if its rows changed.
func (a *Authority) reload(ctx context.Context) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	version, err := a.stateVersion(ctx)
	if err != nil {
		return err
	}
	old := a.state.Load()
	if old != nil && old.version == version {
		return nil
	}
	s := &caState{version: version}
	if s.inters, s.signer, err = a.loadIntermediates(ctx, old); err != nil {
		return err
	}
	if s.jwtKeys, s.jwtSigner, err = a.loadJWTKeys(ctx, old); err != nil {
		return err
	}
	a.state.Store(s)
	return nil
}

// stateVersion summarises the key rows cheaply: rows are only inserted, or
// given a trusted_until once.
func (a *Authority) stateVersion(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, q := range []string{
		"SELECT COUNT(*), COALESCE(MAX(created_at), 0), COUNT(trusted_until), COALESCE(MAX(trusted_until), 0) FROM ca_intermediates",
		"SELECT COUNT(*), COALESCE(MAX(created_at), 0), COUNT(trusted_until), COALESCE(MAX(trusted_until), 0) FROM ca_jwt_keys",
	} {
		var n, maxCreated, nTrusted, maxTrusted int64
		if err := a.db.QueryRowContext(ctx, q).Scan(&n, &maxCreated, &nTrusted, &maxTrusted); err != nil {
			return "", fmt.Errorf("ca: read key versions: %w", err)
		}
		fmt.Fprintf(&b, "%d/%d/%d/%d;", n, maxCreated, nTrusted, maxTrusted)
	}
	return b.String(), nil
}

func (a *Authority) loadIntermediates(ctx context.Context, old *caState) ([]*intermediate, *intermediate, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT id, cert_der, sealed_key, created_at, trusted_until FROM ca_intermediates ORDER BY created_at, id")
	if err != nil {
		return nil, nil, fmt.Errorf("ca: load intermediates: %w", err)
	}
	defer rows.Close()
	type row struct {
		in     *intermediate
		sealed []byte
	}
	var all []row
	for rows.Next() {
		var (
			id           string
			der, sealed  []byte
			created      int64
			trustedUntil *int64
		)
		if err := rows.Scan(&id, &der, &sealed, &created, &trustedUntil); err != nil {
			return nil, nil, fmt.Errorf("ca: load intermediates: %w", err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("ca: intermediate %s: %w", id, err)
		}
		in := &intermediate{id: id, cert: cert, createdAt: time.UnixMilli(created)}
		if trustedUntil != nil {
			in.trustedUntil = time.UnixMilli(*trustedUntil)
		}
		all = append(all, row{in, sealed})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ca: load intermediates: %w", err)
	}
	var (
		out    []*intermediate
		signer *intermediate
	)
	for _, r := range all {
		out = append(out, r.in)
		if r.in.trustedUntil.IsZero() {
			signer = r.in
		}
	}
	if signer == nil {
		return out, nil, nil
	}
	// Open the signing key once; a reload that keeps the same signer
	// reuses the parsed key.
	if old != nil && old.signer != nil && old.signer.id == signer.id {
		signer.key = old.signer.key
		return out, signer, nil
	}
	var sealed []byte
	for _, r := range all {
		if r.in == signer {
			sealed = r.sealed
		}
	}
	key, err := a.openKey(sealed, intermediateSealContext(signer.id))
	if err != nil {
		return nil, nil, fmt.Errorf("ca: intermediate %s: %w", signer.id, err)
	}
	if !publicKeyMatches(signer.cert, key) {
		return nil, nil, fmt.Errorf("ca: intermediate %s: key does not match certificate", signer.id)
	}
	signer.key = key
	return out, signer, nil
}

func (a *Authority) loadJWTKeys(ctx context.Context, old *caState) ([]*jwtKey, *jwtKey, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT kid, sealed_key, created_at, trusted_until FROM ca_jwt_keys ORDER BY created_at, kid")
	if err != nil {
		return nil, nil, fmt.Errorf("ca: load JWT keys: %w", err)
	}
	defer rows.Close()
	cached := map[string]*jwtKey{}
	if old != nil {
		for _, k := range old.jwtKeys {
			cached[k.kid] = k
		}
	}
	var (
		out    []*jwtKey
		signer *jwtKey
	)
	for rows.Next() {
		var (
			kid          string
			sealed       []byte
			created      int64
			trustedUntil *int64
		)
		if err := rows.Scan(&kid, &sealed, &created, &trustedUntil); err != nil {
			return nil, nil, fmt.Errorf("ca: load JWT keys: %w", err)
		}
		k := &jwtKey{kid: kid, createdAt: time.UnixMilli(created)}
		if trustedUntil != nil {
			k.trustedUntil = time.UnixMilli(*trustedUntil)
		}
		if c, ok := cached[kid]; ok {
			k.key, k.signer = c.key, c.signer
		} else {
			key, err := a.openKey(sealed, jwtKeySealContext(kid))
			if err != nil {
				return nil, nil, fmt.Errorf("ca: JWT key %s: %w", kid, err)
			}
			ec, ok := key.(*ecdsa.PrivateKey)
			if !ok {
				return nil, nil, fmt.Errorf("ca: JWT key %s: not an ECDSA key", kid)
			}
			k.key = ec
			if k.signer, err = newJWTSigner(kid, ec); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, k)
		if k.trustedUntil.IsZero() {
			signer = k
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ca: load JWT keys: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].createdAt.Before(out[j].createdAt) })
	return out, signer, nil
}

func newJWTSigner(kid string, key *ecdsa.PrivateKey) (jose.Signer, error) {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("ca: JWT signer %s: %w", kid, err)
	}
	return s, nil
}

// openKey unseals a PKCS#8 private key.
func (a *Authority) openKey(sealed []byte, context string) (crypto.Signer, error) {
	der, err := a.sealer.Open(sealed, context)
	if err != nil {
		return nil, fmt.Errorf("unseal key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}

// sealKey seals a private key as PKCS#8.
func (a *Authority) sealKey(key crypto.Signer, context string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	sealed, err := a.sealer.Seal(der, context)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return sealed, nil
}
