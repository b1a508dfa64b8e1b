package authn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Defaults and limits of Config.
const (
	// DefaultLeeway is the clock-skew allowance for exp, nbf and iat.
	DefaultLeeway = 5 * time.Second
	// MaxLeeway is the largest Leeway accepted.
	MaxLeeway = 60 * time.Second
	// DefaultRevocationWait is how long each revocation-feed request waits
	// for news (long poll).
	DefaultRevocationWait = 25 * time.Second
	// MaxRevocationWait is the longest wait the feed allows.
	MaxRevocationWait = 30 * time.Second
	// DefaultJWKSRefresh is the shortest interval between two key-set
	// fetches caused by tokens with an unknown kid, and the least time
	// between periodic fetches.
	DefaultJWKSRefresh = 30 * time.Second
	// MinJWKSRefresh is the smallest JWKSRefresh honoured.
	MinJWKSRefresh = time.Second
	// DefaultDPoPWindow is how far a DPoP proof's iat may be from now.
	DefaultDPoPWindow = 60 * time.Second
	// DefaultCacheSize is how many verified tokens are cached.
	DefaultCacheSize = 65536
	// MaxTokenSize is the longest access token parsed, in bytes.
	MaxTokenSize = 16 << 10
)

// DefaultAlgorithms are the token signature algorithms accepted when
// Config.Algorithms is empty.
var DefaultAlgorithms = []string{string(jose.EdDSA), string(jose.ES256), string(jose.PS256)}

// asymmetric are the algorithms Config.Algorithms may name: public-key
// signatures only, never "none" or an HMAC.
var asymmetric = []string{
	string(jose.EdDSA),
	string(jose.ES256), string(jose.ES384), string(jose.ES512),
	string(jose.PS256), string(jose.PS384), string(jose.PS512),
	string(jose.RS256), string(jose.RS384), string(jose.RS512),
}

// Config configures a Verifier. The zero value of every optional field is
// the documented safe default.
type Config struct {
	// Issuer is the authorization server's issuer identifier, exactly as
	// in its metadata and its tokens' iss (required, https).
	Issuer string
	// Audience is this resource server's identifier: tokens whose aud
	// does not contain it are refused (required).
	Audience string
	// HTTPClient fetches discovery, keys and the revocation feed; nil
	// means a client that does not follow redirects. Its Timeout, if set,
	// must exceed RevocationWait or the wait is shortened.
	HTTPClient *http.Client
	// Algorithms are the token signature algorithms accepted; empty means
	// DefaultAlgorithms. Naming "none" or an HMAC algorithm is an error.
	Algorithms []string
	// Leeway is the clock-skew allowance for exp, nbf and iat; zero means
	// DefaultLeeway, and more than MaxLeeway is an error.
	Leeway time.Duration
	// RequireSenderConstraint refuses tokens bound neither to a DPoP key
	// nor to a client certificate.
	RequireSenderConstraint bool
	// RevocationWait is how long each revocation-feed request waits for
	// news; zero means DefaultRevocationWait.
	RevocationWait time.Duration
	// JWKSRefresh is the least time between two fetches of the issuer's
	// keys: a flood of tokens with unknown kids causes at most one fetch
	// per JWKSRefresh. Zero means DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// DPoPWindow is how far a DPoP proof's iat may be from now, either
	// way; zero means DefaultDPoPWindow.
	DPoPWindow time.Duration
	// PublicURL, if set, returns the URL of a request as the client
	// addressed it (scheme, host, path), for the DPoP htu check behind a
	// proxy. By default it is https (or http without TLS) + r.Host +
	// r.URL's path.
	PublicURL func(r *http.Request) string
	// CacheSize is how many verified tokens are cached; zero means
	// DefaultCacheSize and a negative value disables the cache.
	CacheSize int
	// OnRefusal, if set, is called for every refused token or request,
	// from the goroutine that verified it.
	OnRefusal func(ctx context.Context, r Refusal)
	// Logger receives a Warn record for every refusal (never the token)
	// and feed or key-set errors; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, []jose.SignatureAlgorithm, error) {
	u, err := url.Parse(cfg.Issuer)
	switch {
	case cfg.Issuer == "":
		return cfg, nil, errors.New("authn: config: Issuer is required")
	case err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		return cfg, nil, errors.New("authn: config: Issuer must be an https URL without query or fragment")
	case cfg.Audience == "":
		return cfg, nil, errors.New("authn: config: Audience is required")
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return cfg, nil, fmt.Errorf("authn: config: Leeway must be between 0 and %s", MaxLeeway)
	case cfg.RevocationWait < 0 || cfg.RevocationWait > MaxRevocationWait:
		return cfg, nil, fmt.Errorf("authn: config: RevocationWait must be between 0 and %s", MaxRevocationWait)
	case cfg.JWKSRefresh < 0 || cfg.DPoPWindow < 0:
		return cfg, nil, errors.New("authn: config: JWKSRefresh and DPoPWindow must not be negative")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms
	}
	algs := make([]jose.SignatureAlgorithm, 0, len(cfg.Algorithms))
	for _, a := range cfg.Algorithms {
		if !slices.Contains(asymmetric, a) {
			return cfg, nil, fmt.Errorf("authn: config: algorithm %q is not an allowed asymmetric signature algorithm", a)
		}
		algs = append(algs, jose.SignatureAlgorithm(a))
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.RevocationWait == 0 {
		cfg.RevocationWait = DefaultRevocationWait
	}
	if cfg.JWKSRefresh == 0 {
		cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	cfg.JWKSRefresh = max(cfg.JWKSRefresh, MinJWKSRefresh)
	if cfg.DPoPWindow == 0 {
		cfg.DPoPWindow = DefaultDPoPWindow
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	if t := cfg.HTTPClient.Timeout; t > 0 && cfg.RevocationWait > t/2 {
		cfg.RevocationWait = (t / 2).Truncate(time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, algs, nil
}
