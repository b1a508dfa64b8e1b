package ca

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Issued is a signed X.509-SVID.
type Issued struct {
	ID           spiffeid.ID
	Certificates []*x509.Certificate // leaf first, then the intermediate
	Serial       string              // lowercase hex
	ExpiresAt    time.Time
}

// Limits on SVID requests.
const (
	maxSVIDTTL        = 24 * time.Hour
	maxAudiences      = 16
	maxAudienceLen    = 512
	notBeforeBackdate = 10 * time.Second
)

// SignX509SVID issues an X.509-SVID for id to the public key of csrDER, on
// behalf of agent (zero: the control plane itself). ttl 0 means the
// default SVID TTL; the certificate never outlives the intermediate. It is
// refused (ErrDenied) if id or agent is on the deny list, and (ErrInvalid)
// if the CSR fails the checks of checkCSR. The certificate is recorded in
// the inventory and the issuance (or refusal) is audited.
func (a *Authority) SignX509SVID(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, agent spiffeid.ID) (*Issued, error) {
	res := a.SignX509SVIDs(ctx, agent, []SVIDRequest{{ID: id, CSR: csrDER, TTL: ttl}})
	return res[0].Issued, res[0].Err
}

// SVIDRequest is one X.509-SVID to sign in SignX509SVIDs.
type SVIDRequest struct {
	ID  spiffeid.ID
	CSR []byte        // DER
	TTL time.Duration // 0: the default SVID TTL
}

// SVIDResult is the outcome of one SVIDRequest: Issued or Err.
type SVIDResult struct {
	Issued *Issued
	Err    error
}

// maxSVIDBatch bounds one SignX509SVIDs call.
const maxSVIDBatch = 1000

// SignX509SVIDs is SignX509SVID for several SVIDs on behalf of one agent:
// each request is checked and signed as by SignX509SVID, but the batch
// shares one inventory transaction and one audit append, which makes it
// much cheaper per SVID. Results are in request order.
func (a *Authority) SignX509SVIDs(ctx context.Context, agent spiffeid.ID, reqs []SVIDRequest) []SVIDResult {
	out := make([]SVIDResult, len(reqs))
	if len(reqs) > maxSVIDBatch {
		err := fmt.Errorf("sign X.509-SVIDs: %w: %d requests exceed %d", ErrInvalid, len(reqs), maxSVIDBatch)
		for i := range out {
			out[i].Err = err
		}
		a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actorFor(ctx, agent), audit.Resource{Type: resSVID}))
		return out
	}
	actor := actorFor(ctx, agent)
	events := make([]*audit.Event, 0, len(reqs))
	recs := make([]CertRecord, 0, len(reqs))
	var signedIdx []int
	for i, r := range reqs {
		iss, rec, err := a.signOne(r.CSR, r.ID, r.TTL, agent)
		if err != nil {
			out[i].Err = err
			events = append(events, newEvent(classEntityManagement, actCreate, false, err.Error(), actor,
				audit.Resource{Type: resSVID, Name: r.ID.String()}))
			continue
		}
		out[i].Issued = iss
		recs = append(recs, rec)
		signedIdx = append(signedIdx, i)
		e := newEvent(classEntityManagement, actCreate, true, "X.509-SVID issued", actor,
			audit.Resource{Type: resSVID, UID: rec.Serial, Name: rec.SPIFFEID})
		e.Unmapped = map[string]any{"not_after": rec.NotAfter.UTC().Format(time.RFC3339), "authority": rec.Authority}
		events = append(events, e)
	}
	fail := func(err error) []SVIDResult {
		for _, i := range signedIdx {
			out[i] = SVIDResult{Err: fmt.Errorf("sign X.509-SVID for %s: %w", reqs[i].ID, err)}
		}
		return out
	}
	if len(recs) > 0 {
		if err := a.record(ctx, recs); err != nil {
			a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actor, audit.Resource{Type: resSVID}))
			return fail(err)
		}
	}
	for _, e := range events {
		e.Metadata.Product = "bulwark ca"
	}
	if _, err := a.audit.Append(ctx, events); err != nil {
		a.log.Error("ca: audit issuance", slog.Any(logKeyError, err))
		return fail(fmt.Errorf("audit: %w", err))
	}
	a.issued.Add(float64(len(recs)))
	for _, r := range recs {
		a.noteExpiry(r.NotAfter)
	}
	return out
}

// signOne checks one request and signs its certificate.
func (a *Authority) signOne(csrDER []byte, id spiffeid.ID, ttl time.Duration, agent spiffeid.ID) (*Issued, CertRecord, error) {
	if err := a.checkMember(id); err != nil {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID: %w", err)
	}
	if a.IsDenied(id, "") {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID for %s: %w", id, ErrDenied)
	}
	if !agent.IsZero() && a.IsDenied(agent, "") {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID for agent %s: %w", agent, ErrDenied)
	}
	if ttl < 0 || ttl > maxSVIDTTL {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID: %w: TTL %s out of range [0, %s]", ErrInvalid, ttl, maxSVIDTTL)
	}
	if ttl == 0 {
		ttl = a.cfg.SVIDTTL
	}
	pub, err := checkCSR(csrDER, id)
	if err != nil {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID for %s: %w", id, err)
	}
	inter := a.state.Load().signer
	now := a.now()
	if inter == nil || !now.Before(inter.cert.NotAfter) {
		return nil, CertRecord{}, errors.New("sign X.509-SVID: no valid intermediate: rotate the CA")
	}
	serial := randomSerial128()
	keyUsage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Bulwark"}},
		NotBefore:             maxTime(now.Add(-notBeforeBackdate), inter.cert.NotBefore),
		NotAfter:              minTime(now.Add(ttl), inter.cert.NotAfter),
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, pub, inter.key)
	if err != nil {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, CertRecord{}, fmt.Errorf("sign X.509-SVID for %s: %w", id, err)
	}
	serialHex := serial.Text(16)
	rec := CertRecord{Serial: serialHex, SPIFFEID: id.String(), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		IssuedAt: now, Authority: inter.id}
	if !agent.IsZero() {
		rec.Agent = agent.String()
	}
	return &Issued{ID: id, Certificates: []*x509.Certificate{leaf, inter.cert}, Serial: serialHex, ExpiresAt: leaf.NotAfter}, rec, nil
}

// SignJWTSVID issues a JWT-SVID (ES256) for id and audience. ttl 0 means
// the default JWT-SVID TTL. It is refused if id is denied.
func (a *Authority) SignJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, error) {
	tok, err := a.signJWTSVID(ctx, id, audience, ttl)
	e := newEvent(classEntityManagement, actCreate, err == nil, "JWT-SVID issued", actorFor(ctx, spiffeid.ID{}),
		audit.Resource{Type: resJWTSVID, Name: id.String()})
	auds := make([]any, len(audience))
	for i, x := range audience {
		auds[i] = x
	}
	e.Unmapped = map[string]any{"audience": auds}
	if err != nil {
		e.StatusDetail = err.Error()
		e.Unmapped = nil
		a.emitRefusal(ctx, e)
		return "", err
	}
	if err := a.emit(ctx, e); err != nil {
		return "", fmt.Errorf("sign JWT-SVID for %s: %w", id, err)
	}
	return tok, nil
}

func (a *Authority) signJWTSVID(_ context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, error) {
	if err := a.checkMember(id); err != nil {
		return "", fmt.Errorf("sign JWT-SVID: %w", err)
	}
	if a.IsDenied(id, "") {
		return "", fmt.Errorf("sign JWT-SVID for %s: %w", id, ErrDenied)
	}
	if len(audience) == 0 || len(audience) > maxAudiences {
		return "", fmt.Errorf("sign JWT-SVID: %w: between 1 and %d audiences are required", ErrInvalid, maxAudiences)
	}
	for _, aud := range audience {
		if aud == "" || len(aud) > maxAudienceLen || !utf8.ValidString(aud) {
			return "", fmt.Errorf("sign JWT-SVID: %w: audience empty, not UTF-8 or longer than %d bytes", ErrInvalid, maxAudienceLen)
		}
	}
	if ttl < 0 || ttl > time.Hour {
		return "", fmt.Errorf("sign JWT-SVID: %w: TTL %s out of range [0, 1h]", ErrInvalid, ttl)
	}
	if ttl == 0 {
		ttl = a.cfg.JWTSVIDTTL
	}
	k := a.state.Load().jwtSigner
	if k == nil {
		return "", errors.New("sign JWT-SVID: no JWT signing key: rotate the CA")
	}
	now := a.now()
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(ttl)),
	}
	tok, err := jwt.Signed(k.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign JWT-SVID for %s: %w", id, err)
	}
	return tok, nil
}

// checkMember refuses an ID outside the trust domain (or the zero ID).
func (a *Authority) checkMember(id spiffeid.ID) error {
	if id.IsZero() || !id.MemberOf(a.cfg.TrustDomain) {
		return fmt.Errorf("%w: SPIFFE ID %q is not in trust domain %s", ErrInvalid, id.String(), a.cfg.TrustDomain)
	}
	return nil
}

// randomSerial128 is a random, non-zero 128-bit serial number.
func randomSerial128() *big.Int {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
