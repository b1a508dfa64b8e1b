package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// dpopHeader is the DPoP header's key in canonical form.
const dpopHeader = "Dpop"

// Authorization schemes.
const (
	schemeBearer = "Bearer"
	schemeDPoP   = "DPoP"
)

// Verifier verifies access tokens issued by one authorization server for
// one audience. It is safe for concurrent use.
type Verifier struct {
	cfg      Config
	algs     []jose.SignatureAlgorithm
	keys     *keyStore
	revoked  *revocations
	feed     *feed
	cache    *tokenCache
	replay   *replayCache
	log      *slog.Logger
	life     context.Context
	done     chan struct{}
	dpopAlgs string // for WWW-Authenticate
}

// discovery is the part of the issuer's metadata the verifier uses.
type discovery struct {
	Issuer         string `json:"issuer"`
	JWKSURI        string `json:"jwks_uri"`
	RevocationFeed string `json:"bulwark_revocation_feed_endpoint"`
}

// New returns a Verifier for cfg. It reads the issuer's metadata at
// Issuer + "/.well-known/openid-configuration" (whose issuer must equal
// Issuer exactly), its key set and its revocation feed, and returns once
// all three are loaded. Until ctx ends, it then keeps the key set and the
// revocations up to date in the background; Done is closed when that has
// stopped.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	cfg, algs, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var meta discovery
	dctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	_, err = getJSON(dctx, cfg.HTTPClient, strings.TrimSuffix(cfg.Issuer, "/")+"/.well-known/openid-configuration", &meta)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("authn: discovery: %w", err)
	}
	if meta.Issuer != cfg.Issuer {
		return nil, errors.New("authn: discovery: the metadata's issuer is not the configured issuer")
	}
	for name, u := range map[string]string{"jwks_uri": meta.JWKSURI, "bulwark_revocation_feed_endpoint": meta.RevocationFeed} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			return nil, fmt.Errorf("authn: discovery: %s is missing or not an https URL", name)
		}
	}
	v := &Verifier{
		cfg:      cfg,
		algs:     algs,
		revoked:  &revocations{m: map[string]int64{}},
		cache:    newTokenCache(cfg.CacheSize),
		replay:   newReplayCache(2*cfg.DPoPWindow+cfg.Leeway, maxReplayEntries),
		log:      cfg.Logger,
		life:     ctx,
		done:     make(chan struct{}),
		dpopAlgs: strings.Join(cfg.Algorithms, " "),
	}
	v.keys = &keyStore{uri: meta.JWKSURI, client: cfg.HTTPClient, allowed: cfg.Algorithms, minWait: cfg.JWKSRefresh, log: cfg.Logger}
	v.keys.set.Store(&keySet{})
	if err := v.keys.fetch(ctx); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	v.feed = &feed{
		endpoint: meta.RevocationFeed, client: cfg.HTTPClient, wait: cfg.RevocationWait,
		leeway: cfg.Leeway, now: cfg.Now, log: cfg.Logger, list: v.revoked,
	}
	if err := v.feed.sync(ctx); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { v.keys.run(ctx) })
	wg.Go(func() { v.feed.run(ctx) })
	go func() {
		wg.Wait()
		close(v.done)
	}()
	return v, nil
}

// Done is closed once the background refresh of keys and revocations has
// stopped, after the context given to New ended.
func (v *Verifier) Done() <-chan struct{} { return v.done }

// LastRevocationSync returns when the revocation feed last answered.
func (v *Verifier) LastRevocationSync() time.Time {
	return time.Unix(0, v.feed.lastSync.Load())
}

// Presentation is what a request presents to authenticate: its
// Authorization values and, for sender-constrained tokens, its DPoP proofs
// and client certificate. VerifyRequest builds it from an *http.Request;
// other transports (gRPC) fill it in themselves.
type Presentation struct {
	// Authorization holds every value of the Authorization header; exactly
	// one, "Bearer <token>" or "DPoP <token>", is accepted.
	Authorization []string
	// DPoP holds every value of the DPoP header.
	DPoP []string
	// Method and URL are the request's method and URL as the client
	// addressed it (scheme, host, path), checked against a DPoP proof's
	// htm and htu.
	Method, URL string
	// ClientCertificate is the leaf certificate the client presented in
	// the TLS handshake, or nil.
	ClientCertificate *x509.Certificate
	// RemoteAddr and Path describe the request in refusals.
	RemoteAddr, Path string
}

// VerifyRequest verifies the access token of an HTTP request and, when the
// token is sender-constrained, its DPoP proof or client certificate.
func (v *Verifier) VerifyRequest(r *http.Request) (*Principal, error) {
	pr := Presentation{
		Authorization: r.Header["Authorization"],
		DPoP:          r.Header[dpopHeader],
		Method:        r.Method,
		RemoteAddr:    r.RemoteAddr,
		Path:          r.URL.Path,
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		pr.ClientCertificate = r.TLS.PeerCertificates[0]
	}
	if len(pr.DPoP) > 0 {
		pr.URL = v.requestURL(r)
	}
	return v.Verify(r.Context(), pr)
}

// requestURL is r's URL as the client addressed it, without the query.
func (v *Verifier) requestURL(r *http.Request) string {
	if v.cfg.PublicURL != nil {
		return v.cfg.PublicURL(r)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.EscapedPath()
}

// Verify verifies what a request presents: its access token and, when the
// token is sender-constrained, the DPoP proof or client certificate. Every
// refusal is reported to Config.OnRefusal and the log, and returned as an
// *Error.
func (v *Verifier) Verify(ctx context.Context, pr Presentation) (*Principal, error) {
	scheme, token, rf := parseAuthorization(pr.Authorization)
	if rf == nil {
		var p *Principal
		if p, rf = v.verifyCore(ctx, token); rf == nil {
			if rf = v.checkBinding(p, scheme, token, &pr); rf == nil {
				return p, nil
			}
		}
	}
	return nil, v.report(ctx, rf, &pr, scheme)
}

// VerifyToken verifies a bearer access token on its own. A token bound to
// a DPoP key or a client certificate is refused, as is any token when
// Config.RequireSenderConstraint is set: use Verify or VerifyRequest for
// those.
func (v *Verifier) VerifyToken(ctx context.Context, token string) (*Principal, error) {
	p, rf := v.verifyCore(ctx, token)
	if rf == nil {
		if rf = v.checkBinding(p, schemeBearer, token, nil); rf == nil {
			return p, nil
		}
	}
	return nil, v.report(ctx, rf, nil, schemeBearer)
}

// verifyCore returns the principal of a token, from the cache or by full
// verification.
func (v *Verifier) verifyCore(ctx context.Context, token string) (*Principal, *refusal) {
	lastDot, rf := shape(token)
	if rf != nil {
		return nil, rf
	}
	var (
		key       cacheKey
		cacheable bool
	)
	if v.cache != nil {
		key, cacheable = tokenKey(token, lastDot)
	}
	if cacheable {
		if e := v.cache.get(&key); e != nil {
			if v.cfg.Now().UnixNano() < e.exp && v.keys.has(e.kid) {
				if v.revoked.revoked(e.p.JTI) {
					return nil, &refusal{reason: ReasonRevoked, detail: "jti is revoked", p: e.p}
				}
				return e.p, nil
			}
			v.cache.remove(&key)
		}
	}
	p, kid, rf := v.verifyJWT(token, func() bool { return v.keys.refreshForUnknownKID(ctx, v.life) })
	if rf != nil {
		return nil, rf
	}
	if cacheable {
		now := v.cfg.Now().UnixNano()
		v.cache.put(&key, &cacheEntry{p: p, exp: p.Expiry.Add(v.cfg.Leeway).UnixNano(), kid: kid}, now)
	}
	return p, nil
}

// parseAuthorization reads "Bearer <token>" or "DPoP <token>" from the
// Authorization values.
func parseAuthorization(values []string) (scheme, token string, rf *refusal) {
	switch len(values) {
	case 0:
		return "", "", refuse(ReasonMissingToken, "no Authorization header")
	case 1:
	default:
		return "", "", refuse(ReasonInvalidRequest, "more than one Authorization header")
	}
	s, t, ok := strings.Cut(values[0], " ")
	switch {
	case strings.EqualFold(s, schemeBearer):
		scheme = schemeBearer
	case strings.EqualFold(s, schemeDPoP):
		scheme = schemeDPoP
	default:
		return "", "", refuse(ReasonMissingToken, "unsupported authorization scheme")
	}
	if !ok || t == "" || strings.ContainsAny(t, " \t,") {
		return scheme, "", refuse(ReasonInvalidRequest, "Authorization is not one scheme and one token")
	}
	return scheme, t, nil
}

// checkBinding checks that the request proves possession of what the
// token is bound to. pr is nil for a token verified on its own.
func (v *Verifier) checkBinding(p *Principal, scheme, token string, pr *Presentation) *refusal {
	fail := func(reason, detail string) *refusal { return &refusal{reason: reason, detail: detail, p: p} }
	cnf := p.Confirmation
	switch {
	case cnf.JKT != "":
		if scheme != schemeDPoP {
			return fail(ReasonDPoPRequired, "DPoP-bound token presented as a bearer token")
		}
		if pr == nil || len(pr.DPoP) == 0 {
			return fail(ReasonDPoPRequired, "DPoP-bound token presented without a DPoP proof")
		}
		if len(pr.DPoP) > 1 {
			return fail(ReasonDPoPInvalid, "more than one DPoP proof")
		}
		now := v.cfg.Now()
		proof, err := dpop.Verify(pr.DPoP[0], dpop.VerifyOptions{
			Method: pr.Method, URL: pr.URL, Now: now, Window: v.cfg.DPoPWindow,
			AccessToken: token, Algorithms: v.cfg.Algorithms,
		})
		if err != nil {
			return fail(ReasonDPoPInvalid, err.Error())
		}
		if subtle.ConstantTimeCompare([]byte(proof.Thumbprint), []byte(cnf.JKT)) != 1 {
			return fail(ReasonBindingMismatch, "DPoP proof is signed by another key than the token is bound to")
		}
		switch v.replay.seen(proof.Thumbprint, proof.JTI, now) {
		case replaySeen:
			return fail(ReasonDPoPReplay, "DPoP proof was used before")
		case replayFull:
			return fail(ReasonDPoPReplay, "DPoP replay cache is full")
		}
	case cnf.X5TS256 != "":
		if scheme != schemeBearer {
			return fail(ReasonDPoPInvalid, "certificate-bound token presented with the DPoP scheme")
		}
		if pr == nil || pr.ClientCertificate == nil {
			return fail(ReasonCertRequired, "certificate-bound token presented without a client certificate")
		}
		sum := sha256.Sum256(pr.ClientCertificate.Raw)
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(cnf.X5TS256)) != 1 {
			return fail(ReasonBindingMismatch, "client certificate is not the one the token is bound to")
		}
	default:
		if scheme == schemeDPoP {
			return fail(ReasonDPoPInvalid, "token presented with the DPoP scheme is not DPoP-bound")
		}
		if v.cfg.RequireSenderConstraint {
			return fail(ReasonUnbound, "token is not sender-constrained")
		}
	}
	return nil
}
