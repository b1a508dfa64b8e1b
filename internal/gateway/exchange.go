package gateway

import (
	"container/list"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// RFC 8693 and RFC 7523 identifiers.
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	assertionTypeJWT     = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// Exchanger defaults and limits.
const (
	// DefaultExchangeCacheSize is how many internal tokens are cached.
	DefaultExchangeCacheSize = 10000
	// ExchangeExpiryMargin is how long before its expiry a cached internal
	// token stops being used.
	ExchangeExpiryMargin = 30 * time.Second
	// assertionLifetime is the client assertion's lifetime: one request.
	assertionLifetime = 60 * time.Second
	// maxTokenResponse bounds the token endpoint's answer.
	maxTokenResponse = 64 << 10
)

// ErrExchange is wrapped by every error of Exchange: the internal token
// could not be obtained, so the request must not be forwarded.
var ErrExchange = errors.New("token exchange failed")

// ExchangerConfig configures an Exchanger.
type ExchangerConfig struct {
	// TokenURL is the issuer's token endpoint (https, or http to loopback
	// in tests). Required.
	TokenURL string
	// ClientID is the gateway's OAuth client ("bank-api"). Required.
	ClientID string
	// Key signs the private_key_jwt client assertion: Ed25519, ECDSA P-256
	// or RSA. Required.
	Key crypto.Signer
	// KeyID is the kid of Key in the client's registered JWKS; empty leaves
	// it out.
	KeyID string
	// HTTPClient reaches the token endpoint; nil means a client with a 10s
	// timeout that follows no redirect.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CacheSize bounds the cached tokens; zero means
	// DefaultExchangeCacheSize.
	CacheSize int
}

// Exchanger obtains internal tokens by token exchange (RFC 8693) at the
// issuer's token endpoint, authenticated with private_key_jwt, and caches
// them per (subject token signature, audience) until 30s before they expire.
// Concurrent misses for one key make one request. It is safe for concurrent
// use.
type Exchanger struct {
	cfg    ExchangerConfig
	signer jose.Signer

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     *list.List
	flights map[string]*flight
}

type cacheEntry struct {
	key   string
	token string
	exp   time.Time
}

// flight is one request in progress; the callers that wait for it read its
// result once done is closed.
type flight struct {
	done  chan struct{}
	token string
	exp   time.Time
	err   error
}

// NewExchanger validates cfg and returns an Exchanger.
func NewExchanger(cfg ExchangerConfig) (*Exchanger, error) {
	u, err := url.Parse(cfg.TokenURL)
	switch {
	case cfg.TokenURL == "" || err != nil || u.Host == "":
		return nil, fmt.Errorf("token exchange: token URL %q is not an absolute URL", cfg.TokenURL)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("token exchange: token URL %q must be https", cfg.TokenURL)
	case cfg.ClientID == "":
		return nil, errors.New("token exchange: client ID is required")
	case cfg.Key == nil:
		return nil, errors.New("token exchange: client key is required")
	case cfg.CacheSize < 0:
		return nil, errors.New("token exchange: cache size must not be negative")
	}
	var alg jose.SignatureAlgorithm
	switch k := cfg.Key.Public().(type) {
	case ed25519.PublicKey:
		alg = jose.EdDSA
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize != 256 {
			return nil, errors.New("token exchange: ECDSA client key must be P-256")
		}
		alg = jose.ES256
	case *rsa.PublicKey:
		alg = jose.PS256
	default:
		return nil, fmt.Errorf("token exchange: unsupported client key type %T", k)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: cfg.Key, KeyID: cfg.KeyID}}, opts)
	if err != nil {
		return nil, fmt.Errorf("token exchange: signer: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultExchangeCacheSize
	}
	return &Exchanger{cfg: cfg, signer: signer, entries: map[string]*list.Element{}, lru: list.New(), flights: map[string]*flight{}}, nil
}

// exchangeCacheKey keys a subject token and audience by the SHA-256 of the
// token's decoded signature (strict base64url: a non-canonical encoding is
// refused, as the verifier refuses it) and the audience; the raw token is
// never held as a key.
func exchangeCacheKey(subjectToken, audience string) (string, error) {
	parts := strings.Split(subjectToken, ".")
	if len(parts) != 3 || parts[2] == "" {
		return "", fmt.Errorf("%w: subject token is not a compact JWS", ErrExchange)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: subject token signature is not base64url", ErrExchange)
	}
	h := sha256.New()
	h.Write(sig)
	h.Write([]byte{0})
	h.Write([]byte(audience))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Exchange returns an internal token for audience with the subject of
// subjectToken, from the cache or the token endpoint.
func (e *Exchanger) Exchange(ctx context.Context, subjectToken, audience string) (string, time.Time, error) {
	if audience == "" {
		return "", time.Time{}, fmt.Errorf("%w: empty audience", ErrExchange)
	}
	key, err := exchangeCacheKey(subjectToken, audience)
	if err != nil {
		return "", time.Time{}, err
	}
	e.mu.Lock()
	if el, ok := e.entries[key]; ok {
		ce := el.Value.(*cacheEntry)
		if e.cfg.Now().Before(ce.exp.Add(-ExchangeExpiryMargin)) {
			e.lru.MoveToFront(el)
			e.mu.Unlock()
			return ce.token, ce.exp, nil
		}
		e.lru.Remove(el)
		delete(e.entries, key)
	}
	if f, ok := e.flights[key]; ok {
		e.mu.Unlock()
		select {
		case <-f.done:
			return f.token, f.exp, f.err
		case <-ctx.Done():
			return "", time.Time{}, fmt.Errorf("%w: %w", ErrExchange, ctx.Err())
		}
	}
	f := &flight{done: make(chan struct{})}
	e.flights[key] = f
	e.mu.Unlock()

	// The request is not tied to the first caller's cancellation: others
	// may be waiting for it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	f.token, f.exp, f.err = e.request(rctx, subjectToken, audience)
	cancel()

	e.mu.Lock()
	delete(e.flights, key)
	if f.err == nil && e.cfg.Now().Before(f.exp.Add(-ExchangeExpiryMargin)) {
		e.entries[key] = e.lru.PushFront(&cacheEntry{key: key, token: f.token, exp: f.exp})
		for e.lru.Len() > e.cfg.CacheSize {
			old := e.lru.Back()
			e.lru.Remove(old)
			delete(e.entries, old.Value.(*cacheEntry).key)
		}
	}
	e.mu.Unlock()
	close(f.done)
	return f.token, f.exp, f.err
}

// Len returns the number of cached tokens.
func (e *Exchanger) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lru.Len()
}

// assertion returns a fresh private_key_jwt client assertion.
func (e *Exchanger) assertion() (string, error) {
	now := e.cfg.Now()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := jwt.Claims{
		Issuer:   e.cfg.ClientID,
		Subject:  e.cfg.ClientID,
		Audience: jwt.Audience{e.cfg.TokenURL},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(assertionLifetime)),
		ID:       hex.EncodeToString(jti),
	}
	return jwt.Signed(e.signer).Claims(claims).Serialize()
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Error           string `json:"error"`
}

func (e *Exchanger) request(ctx context.Context, subjectToken, audience string) (string, time.Time, error) {
	assertion, err := e.assertion()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: client assertion: %w", ErrExchange, err)
	}
	form := url.Values{
		"grant_type":            {grantTokenExchange},
		"subject_token":         {subjectToken},
		"subject_token_type":    {tokenTypeAccessToken},
		"requested_token_type":  {tokenTypeAccessToken},
		"audience":              {audience},
		"client_id":             {e.cfg.ClientID},
		"client_assertion_type": {assertionTypeJWT},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrExchange, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	start := e.cfg.Now()
	resp, err := e.cfg.HTTPClient.Do(req)
	if err != nil {
		// The error names the URL, never the form.
		return "", time.Time{}, fmt.Errorf("%w: token endpoint unreachable: %w", ErrExchange, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: read token response: %w", ErrExchange, err)
	}
	if len(body) > maxTokenResponse {
		return "", time.Time{}, fmt.Errorf("%w: token response larger than %d bytes", ErrExchange, maxTokenResponse)
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		code := tr.Error
		if jsonErr != nil || len(code) > 64 {
			code = "unreadable"
		}
		return "", time.Time{}, fmt.Errorf("%w: token endpoint answered %d (%s)", ErrExchange, resp.StatusCode, code)
	}
	switch {
	case jsonErr != nil:
		return "", time.Time{}, fmt.Errorf("%w: token response is not JSON", ErrExchange)
	case tr.AccessToken == "" || strings.Count(tr.AccessToken, ".") != 2:
		return "", time.Time{}, fmt.Errorf("%w: token response without a JWT access token", ErrExchange)
	case tr.IssuedTokenType != "" && tr.IssuedTokenType != tokenTypeAccessToken:
		return "", time.Time{}, fmt.Errorf("%w: issued token type %q is not an access token", ErrExchange, tr.IssuedTokenType)
	case tr.ExpiresIn <= 0:
		return "", time.Time{}, fmt.Errorf("%w: token response without expires_in", ErrExchange)
	}
	return tr.AccessToken, start.Add(time.Duration(tr.ExpiresIn) * time.Second), nil
}
