package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/store"
)

// signingAlgs are the only JWS algorithms the server signs or accepts for
// its own tokens. "none" and HMAC algorithms are absent on purpose.
var signingAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256, jose.PS256}

// rsaBits is the size of generated PS256 keys.
const rsaBits = 3072

// removeGrace is how long a retired key stays published after the last
// token it signed has expired, to absorb clock skew.
const removeGrace = time.Minute

// signingKey is one token-signing key and its schedule.
type signingKey struct {
	kid        string
	alg        jose.SignatureAlgorithm
	public     jose.JSONWebKey
	private    crypto.Signer
	publishAt  time.Time
	activateAt time.Time
	retireAt   time.Time // zero: not retired
	removeAt   time.Time // zero: not scheduled for removal
}

// keyManager publishes, rotates and signs with the server's keys. A new
// key is published KeyPublishAhead before it signs; a retired key stays
// published until every token it signed has expired.
type keyManager struct {
	s *Server

	mu      sync.RWMutex
	keys    []*signingKey // every key not yet removed, by activateAt
	signers map[string]jose.Signer
}

func newKeyManager(ctx context.Context, s *Server) (*keyManager, error) {
	km := &keyManager{s: s, signers: map[string]jose.Signer{}}
	if err := km.rotate(ctx); err != nil {
		return nil, err
	}
	return km, nil
}

// maxTokenTTL is the longest lifetime of a token signed by a key.
func (km *keyManager) maxTokenTTL() time.Duration {
	return max(km.s.cfg.AccessTokenTTL, km.s.cfg.IDTokenTTL)
}

// rotate brings the key schedule up to date: it creates the first key,
// schedules the next key KeyPublishAhead before the active one is due to
// retire (or at once when the configured algorithm changed), and reloads
// the schedule from the store so that replicas agree.
func (km *keyManager) rotate(ctx context.Context) error {
	cfg := km.s.cfg
	now := km.s.now()
	err := km.s.db.InTx(ctx, func(tx *store.Tx) error {
		if tx.Driver() == store.Postgres {
			// Serialize schedulers across replicas.
			if _, err := tx.ExecContext(ctx, "LOCK TABLE identity_signing_keys IN SHARE ROW EXCLUSIVE MODE"); err != nil {
				return err
			}
		}
		keys, err := km.loadSchedule(ctx, tx)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return km.insertKey(ctx, tx, now, now, nil)
		}
		last := keys[len(keys)-1]
		if last.activateAt.After(now) {
			return nil // a successor is already published and waiting
		}
		due := last.activateAt.Add(cfg.KeyRotationInterval)
		if string(last.alg) != cfg.SigningAlg {
			due = now // the configured algorithm changed: rotate now
		}
		if now.Before(due.Add(-cfg.KeyPublishAhead)) {
			return nil
		}
		activate := due
		if earliest := now.Add(cfg.KeyPublishAhead); activate.Before(earliest) {
			activate = earliest
		}
		return km.insertKey(ctx, tx, now, activate, last)
	})
	if err != nil {
		return fmt.Errorf("rotate signing keys: %w", err)
	}
	return km.reload(ctx)
}

// insertKey creates a key that is published at now and signs from
// activate; prev, if any, retires at activate.
func (km *keyManager) insertKey(ctx context.Context, tx *store.Tx, now, activate time.Time, prev *signingKey) error {
	alg := jose.SignatureAlgorithm(km.s.cfg.SigningAlg)
	priv, err := generateKey(alg)
	if err != nil {
		return err
	}
	pub := jose.JSONWebKey{Key: priv.Public(), Algorithm: string(alg), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	pubJSON, err := json.Marshal(pub)
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode private key: %w", err)
	}
	sealed, err := km.s.sealer.Seal(der, sealContext(pub.KeyID))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO identity_signing_keys
		(kid, alg, public_jwk, sealed_private, created_at, publish_at, activate_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		pub.KeyID, string(alg), string(pubJSON), sealed, now.UnixMilli(), now.UnixMilli(), activate.UnixMilli()); err != nil {
		return fmt.Errorf("store signing key: %w", err)
	}
	if prev != nil {
		remove := activate.Add(km.maxTokenTTL() + removeGrace)
		if _, err := tx.ExecContext(ctx, "UPDATE identity_signing_keys SET retire_at = ?, remove_at = ? WHERE kid = ?",
			activate.UnixMilli(), remove.UnixMilli(), prev.kid); err != nil {
			return fmt.Errorf("retire signing key: %w", err)
		}
	}
	km.s.log.InfoContext(ctx, "signing key scheduled", "kid", pub.KeyID, "alg", string(alg), "activate_at", activate.UTC())
	return nil
}

func sealContext(kid string) string { return "identity_signing_keys/" + kid }

func generateKey(alg jose.SignatureAlgorithm) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case jose.EdDSA:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.PS256:
		k, err = rsa.GenerateKey(rand.Reader, rsaBits)
	default:
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return k, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// loadSchedule reads every key not yet removed, without private keys.
func (km *keyManager) loadSchedule(ctx context.Context, q querier) ([]*signingKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT kid, alg, public_jwk, publish_at, activate_at, retire_at, remove_at
		FROM identity_signing_keys WHERE remove_at IS NULL OR remove_at > ? ORDER BY activate_at, kid`, km.s.now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	defer rows.Close()
	var keys []*signingKey
	for rows.Next() {
		var (
			k                  signingKey
			alg, pub           string
			publish, activate  int64
			retire, removeTime sql.NullInt64
		)
		if err := rows.Scan(&k.kid, &alg, &pub, &publish, &activate, &retire, &removeTime); err != nil {
			return nil, fmt.Errorf("load signing keys: %w", err)
		}
		if err := json.Unmarshal([]byte(pub), &k.public); err != nil {
			return nil, fmt.Errorf("signing key %q: %w", k.kid, err)
		}
		k.alg = jose.SignatureAlgorithm(alg)
		k.publishAt, k.activateAt = time.UnixMilli(publish), time.UnixMilli(activate)
		if retire.Valid {
			k.retireAt = time.UnixMilli(retire.Int64)
		}
		if removeTime.Valid {
			k.removeAt = time.UnixMilli(removeTime.Int64)
		}
		keys = append(keys, &k)
	}
	return keys, rows.Err()
}

// reload refreshes the in-memory schedule, unsealing private keys it has
// not seen yet.
func (km *keyManager) reload(ctx context.Context) error {
	keys, err := km.loadSchedule(ctx, km.s.db)
	if err != nil {
		return err
	}
	km.mu.RLock()
	known := map[string]crypto.Signer{}
	for _, k := range km.keys {
		known[k.kid] = k.private
	}
	km.mu.RUnlock()
	for _, k := range keys {
		if priv := known[k.kid]; priv != nil {
			k.private = priv
			continue
		}
		var sealed []byte
		if err := km.s.db.QueryRowContext(ctx, "SELECT sealed_private FROM identity_signing_keys WHERE kid = ?", k.kid).Scan(&sealed); err != nil {
			return fmt.Errorf("load signing key %q: %w", k.kid, err)
		}
		der, err := km.s.sealer.Open(sealed, sealContext(k.kid))
		if err != nil {
			return fmt.Errorf("signing key %q: %w", k.kid, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return fmt.Errorf("signing key %q: %w", k.kid, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return fmt.Errorf("signing key %q: not a signing key", k.kid)
		}
		k.private = signer
	}
	km.mu.Lock()
	km.keys = keys
	km.mu.Unlock()
	return nil
}

// active returns the key that signs at now: the latest whose activation
// has come.
func (km *keyManager) active(now time.Time) (*signingKey, error) {
	km.mu.RLock()
	defer km.mu.RUnlock()
	for i := len(km.keys) - 1; i >= 0; i-- {
		if k := km.keys[i]; !k.activateAt.After(now) {
			return k, nil
		}
	}
	return nil, errors.New("no active signing key")
}

// published returns the keys in the JWKS at now.
func (km *keyManager) published(now time.Time) []jose.JSONWebKey {
	km.mu.RLock()
	defer km.mu.RUnlock()
	out := make([]jose.JSONWebKey, 0, len(km.keys))
	for _, k := range km.keys {
		if !k.publishAt.After(now) && (k.removeAt.IsZero() || now.Before(k.removeAt)) {
			out = append(out, k.public)
		}
	}
	return out
}

// lookup returns the published key with kid.
func (km *keyManager) lookup(kid string, now time.Time) (*signingKey, bool) {
	km.mu.RLock()
	defer km.mu.RUnlock()
	for _, k := range km.keys {
		if k.kid == kid && !k.publishAt.After(now) && (k.removeAt.IsZero() || now.Before(k.removeAt)) {
			return k, true
		}
	}
	return nil, false
}

// sign signs claims (marshalled to JSON) as a compact JWS with header typ
// and the active key's kid.
func (km *keyManager) sign(typ string, claims any) (string, error) {
	k, err := km.active(km.s.now())
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	signer, err := km.signer(k, typ)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", typ, err)
	}
	return jws.CompactSerialize()
}

func (km *keyManager) signer(k *signingKey, typ string) (jose.Signer, error) {
	key := k.kid + "\x00" + typ
	km.mu.RLock()
	s, ok := km.signers[key]
	km.mu.RUnlock()
	if ok {
		return s, nil
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader(jose.HeaderKey("kid"), k.kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.private}, opts)
	if err != nil {
		return nil, fmt.Errorf("signer for key %q: %w", k.kid, err)
	}
	km.mu.Lock()
	km.signers[key] = s
	km.mu.Unlock()
	return s, nil
}

// errNotOurToken is returned by verify for anything that is not a token
// this server signed with a published key and the expected typ.
var errNotOurToken = errors.New("not a token issued by this server")

// maxTokenLen bounds the tokens verify parses.
const maxTokenLen = 16 << 10

// verify checks that token is a compact JWS signed by one of the server's
// published keys with header typ, and returns its payload. It checks no
// claims: callers check iss, exp and the rest.
func (km *keyManager) verify(token, typ string) ([]byte, error) {
	if len(token) > maxTokenLen || strings.Count(token, ".") != 2 {
		return nil, errNotOurToken
	}
	jws, err := jose.ParseSignedCompact(token, signingAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errNotOurToken
	}
	h := jws.Signatures[0].Protected
	if h.KeyID == "" || h.JSONWebKey != nil || h.ExtraHeaders["crit"] != nil || h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil {
		return nil, errNotOurToken
	}
	if got, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(got, typ) && !strings.EqualFold(got, "application/"+typ) {
		return nil, errNotOurToken
	}
	k, ok := km.lookup(h.KeyID, km.s.now())
	if !ok || string(k.alg) != h.Algorithm {
		return nil, errNotOurToken
	}
	payload, err := jws.Verify(k.public.Key)
	if err != nil {
		return nil, errNotOurToken
	}
	return payload, nil
}

// checkIssuer checks an issuer identifier (RFC 8414 §2) and returns what
// is wrong with it, or "".
func checkIssuer(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return "is not an absolute https URL"
	case u.Scheme != "https":
		return "must use https"
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "must not have a query or fragment"
	case u.User != nil:
		return "must not hold user information"
	case strings.HasSuffix(u.Path, "/"):
		return "must not end with /"
	}
	return ""
}
