package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Limits on join tokens.
const (
	joinTokenBytes  = 32
	maxJoinTokenTTL = 24 * time.Hour
	maxTokenLen     = 256
)

// hashToken is the stored form of a join token.
func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// AgentID is the SPIFFE ID of the agent named name.
func (a *Authority) AgentID(name string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(a.cfg.TrustDomain, agentPathRoot, name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: agent name %q: %w", ErrInvalid, clip(name), err)
	}
	return id, nil
}

// CreateJoinToken makes a one-time join token for the agent agentName
// (ttl 0: the default join-token TTL). Only the token's hash is stored; the
// token itself is returned once and never logged or audited.
func (a *Authority) CreateJoinToken(ctx context.Context, agentName string, ttl time.Duration) (string, spiffeid.ID, time.Time, error) {
	actor := actorFor(ctx, spiffeid.ID{})
	agentID, err := a.AgentID(agentName)
	if err == nil && (ttl < 0 || ttl > maxJoinTokenTTL) {
		err = fmt.Errorf("%w: join token TTL %s out of range [0, %s]", ErrInvalid, ttl, maxJoinTokenTTL)
	}
	if err != nil {
		a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actor, audit.Resource{Type: resJoinToken}))
		return "", spiffeid.ID{}, time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	if ttl == 0 {
		ttl = a.cfg.JoinTokenTTL
	}
	b := make([]byte, joinTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", spiffeid.ID{}, time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := a.now()
	expires := time.UnixMilli(now.Add(ttl).UnixMilli())
	if _, err := a.db.ExecContext(ctx, "INSERT INTO ca_join_tokens (token_hash, agent_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
		hashToken(tok), agentID.String(), now.UnixMilli(), expires.UnixMilli()); err != nil {
		return "", spiffeid.ID{}, time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	e := newEvent(classEntityManagement, actCreate, true, "agent join token created", actor,
		audit.Resource{Type: resJoinToken, UID: hashToken(tok)[:16], Name: agentID.String()})
	e.Unmapped = map[string]any{"expires_at": expires.UTC().Format(time.RFC3339)}
	if err := a.emit(ctx, e); err != nil {
		return "", spiffeid.ID{}, time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	return tok, agentID, expires, nil
}

// Join redeems a join token: if it is known, unused and unexpired, it is
// consumed (atomically: one use only, even under concurrency) and the
// agent's SVID is issued to the CSR's key. A bad CSR does not consume the
// token. Every outcome is audited; the token itself never is.
func (a *Authority) Join(ctx context.Context, token string, csrDER []byte) (*Issued, error) {
	iss, agentID, err := a.join(ctx, token, csrDER)
	if err != nil {
		e := newEvent(classAuthentication, actLogon, false, err.Error(), &audit.Actor{AppName: "bulwark agent", AppUID: agentID},
			audit.Resource{Type: resAgent, Name: agentID})
		a.emitRefusal(ctx, e)
		return nil, err
	}
	e := newEvent(classAuthentication, actLogon, true, "agent joined", &audit.Actor{AppName: "bulwark agent", AppUID: agentID},
		audit.Resource{Type: resAgent, UID: iss.Serial, Name: agentID})
	if err := a.emit(ctx, e); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return iss, nil
}

func (a *Authority) join(ctx context.Context, token string, csrDER []byte) (*Issued, string, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, "", fmt.Errorf("join: %w", ErrTokenInvalid)
	}
	hash := hashToken(token)
	now := a.now().UnixMilli()
	var (
		agent     string
		expiresAt int64
		usedAt    *int64
	)
	err := a.db.QueryRowContext(ctx, "SELECT agent_id, expires_at, used_at FROM ca_join_tokens WHERE token_hash = ?", hash).
		Scan(&agent, &expiresAt, &usedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, "", fmt.Errorf("join: %w: unknown token", ErrTokenInvalid)
	case err != nil:
		return nil, "", fmt.Errorf("join: %w", err)
	case usedAt != nil:
		return nil, agent, fmt.Errorf("join: %w: token already used", ErrTokenInvalid)
	case expiresAt <= now:
		return nil, agent, fmt.Errorf("join: %w: token expired", ErrTokenInvalid)
	}
	agentID, err := spiffeid.FromString(agent)
	if err != nil {
		return nil, agent, fmt.Errorf("join: stored agent ID: %w", err)
	}
	if a.IsDenied(agentID, "") {
		return nil, agent, fmt.Errorf("join: agent %s: %w", agent, ErrDenied)
	}
	if _, err := checkCSR(csrDER, agentID); err != nil {
		return nil, agent, fmt.Errorf("join: %w", err)
	}
	res, err := a.db.ExecContext(ctx, "UPDATE ca_join_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
		now, hash, now)
	if err != nil {
		return nil, agent, fmt.Errorf("join: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, agent, fmt.Errorf("join: %w", err)
	} else if n != 1 {
		return nil, agent, fmt.Errorf("join: %w: token already used", ErrTokenInvalid)
	}
	iss, err := a.SignX509SVID(ctx, csrDER, agentID, 0, agentID)
	if err != nil {
		return nil, agent, fmt.Errorf("join: %w", err)
	}
	return iss, agent, nil
}

// VerifyAgent checks a TLS client certificate chain (leaf first): it must
// be an unexpired X.509-SVID of this CA (verified against the current
// X509Authorities), for an agent ID (spiffe://<td>/agent/<name>), whose
// ID and serial are not denied. It returns the agent's ID.
func (a *Authority) VerifyAgent(chain []*x509.Certificate) (spiffeid.ID, error) {
	id, err := a.verifySVID("verify agent", chain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !isAgentID(id) {
		return spiffeid.ID{}, fmt.Errorf("verify agent: %w: %s is not an agent", ErrInvalid, id)
	}
	return id, nil
}

// VerifyWorkload checks a TLS client certificate chain (leaf first): it
// must be an unexpired X.509-SVID of this CA, verified against the current
// X509Authorities, whose ID and serial are not denied. It returns the
// workload's SPIFFE ID. Enforcement points authenticate to the policy
// decision service and the bundle endpoint this way.
func (a *Authority) VerifyWorkload(chain []*x509.Certificate) (spiffeid.ID, error) {
	return a.verifySVID("verify workload", chain)
}

func (a *Authority) verifySVID(op string, chain []*x509.Certificate) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%s: %w: no client certificate", op, ErrInvalid)
	}
	bundle := x509bundle.FromX509Authorities(a.cfg.TrustDomain, a.X509Authorities())
	id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(a.now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
	}
	if a.IsDenied(id, chain[0].SerialNumber.Text(16)) {
		return spiffeid.ID{}, fmt.Errorf("%s %s: %w", op, id, ErrDenied)
	}
	return id, nil
}
