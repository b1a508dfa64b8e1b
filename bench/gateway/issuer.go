package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/identity"
)

// Names of the OAuth clients the bench registers.
const (
	// benchClientID is the client whose client-credentials token drives
	// the load.
	benchClientID = "bench-client"
	// apiAudience is the audience of that token (contract §6).
	apiAudience = "bank-api"
	// benchScope is the scope the token carries and the routes require.
	benchScope = "bench:write"
)

// issuer is the in-process control plane and what the bench got from it.
type issuer struct {
	srv    *controlplane.Server
	client *http.Client // trusts the control plane's CA
	// token is the access token (ES256, aud bank-api) the load sends.
	token string
	// exp is its expiry.
	exp time.Time
	// keyPEM is the file holding the public key that signed token (PKIX PEM).
	keyPEM string
	// exchangeKey is the key of the gateway's token-exchange client,
	// registered by the first gateway started.
	exchangeKey ed25519.PrivateKey
	stop        func()
}

// startIssuer runs the control plane in-process on 127.0.0.1:0 with its
// data in dir, signing ES256 tokens that live tokenTTL, registers the bench
// client and gets its token.
func startIssuer(ctx context.Context, dir string, tokenTTL time.Duration) (_ *issuer, err error) {
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "controlplane")
	cfg.Listen = "127.0.0.1:0"
	cfg.Identity.SigningAlg = "ES256"
	cfg.Identity.AccessTokenTTL = config.Duration(tokenTTL)
	cfg.ResolvePaths()
	srv, err := controlplane.New(ctx, &cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	is := &issuer{srv: srv, stop: func() { cancel(); <-done }}
	defer func() {
		if err != nil {
			is.stop()
		}
	}()
	caPEM, err := os.ReadFile(srv.CAFile())
	if err != nil {
		return nil, fmt.Errorf("control plane CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("control plane CA: no certificate in " + srv.CAFile())
	}
	is.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if err := waitReady(ctx, is.client, srv.URL()+"/readyz"); err != nil {
		return nil, err
	}

	key, err := registerClient(ctx, srv.Identity(), &identity.Client{
		ID: benchClientID, Name: "gateway benchmark", Profile: identity.ProfileOAuth2,
		TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
		GrantTypes:              []string{identity.GrantClientCredentials},
		Scopes:                  []string{benchScope}, Audiences: []string{apiAudience},
	})
	if err != nil {
		return nil, err
	}
	if is.token, is.exp, err = clientCredentialsToken(ctx, is.client, srv.Issuer(), benchClientID, key, benchScope, apiAudience); err != nil {
		return nil, err
	}
	if time.Until(is.exp) < tokenTTL/2 {
		return nil, fmt.Errorf("access token expires at %s, sooner than asked", is.exp.Format(time.RFC3339))
	}
	if is.keyPEM, err = exportSigningKey(ctx, is.client, srv.Issuer(), is.token, filepath.Join(dir, "issuer-key.pem")); err != nil {
		return nil, err
	}
	return is, nil
}

// waitReady polls url until it answers 200.
func waitReady(ctx context.Context, hc *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("readiness request: %w", err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// registerClient creates c with a new Ed25519 key for private_key_jwt and
// returns the key.
func registerClient(ctx context.Context, ids *identity.Server, c *identity.Client) (ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("client key: %w", err)
	}
	jwk, err := identity.NewClientKey(pub, nil)
	if err != nil {
		return nil, fmt.Errorf("client key: %w", err)
	}
	c.JWKS = &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}
	if err := ids.CreateClient(ctx, c); err != nil {
		return nil, fmt.Errorf("register client %q: %w", c.ID, err)
	}
	return priv, nil
}

// clientAssertion is a private_key_jwt assertion (RFC 7523) for issuer,
// whose kid is the RFC 7638 thumbprint identity.NewClientKey registers.
func clientAssertion(key ed25519.PrivateKey, clientID, issuer string) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", base64.RawURLEncoding.EncodeToString(tp)))
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	now := time.Now().Unix()
	payload, err := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": issuer,
		"jti": hex.EncodeToString(jti), "iat": now, "exp": now + 60})
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	return jws.CompactSerialize()
}

// clientCredentialsToken gets an access token for clientID over the token
// endpoint, authenticating with private_key_jwt.
func clientCredentialsToken(ctx context.Context, hc *http.Client, issuer, clientID string, key ed25519.PrivateKey, scope, audience string) (string, time.Time, error) {
	assertion, err := clientAssertion(key, clientID, issuer)
	if err != nil {
		return "", time.Time{}, err
	}
	form := url.Values{
		"grant_type":            {identity.GrantClientCredentials},
		"client_id":             {clientID},
		"scope":                 {scope},
		"resource":              {audience},
		"client_assertion_type": {identity.ClientAssertionTypeJWT},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuer+identity.PathToken, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The body of an error response is an OAuth error, no token.
		return "", time.Time{}, fmt.Errorf("token request for %s: status %d: %s", clientID, resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", time.Time{}, fmt.Errorf("token response for %s: no access_token (%v)", clientID, err)
	}
	return tok.AccessToken, time.Now().Add(time.Duration(tok.ExpiresIn) * time.Second), nil
}

// exportSigningKey writes the issuer's public key that signed token (found
// by the token's kid in the JWKS) to path as PKIX PEM, for HAProxy.
func exportSigningKey(ctx context.Context, hc *http.Client, issuer, token, path string) (string, error) {
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return "", fmt.Errorf("access token is not ES256: %w", err)
	}
	kid := jws.Signatures[0].Header.KeyID
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+identity.PathJWKS, nil)
	if err != nil {
		return "", fmt.Errorf("jwks request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("jwks request: %w", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return "", fmt.Errorf("jwks: %w", err)
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		return "", fmt.Errorf("jwks has no key %q", kid)
	}
	pub, ok := keys[0].Key.(*ecdsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("jwks key %q is %T, want an ECDSA public key", kid, keys[0].Key)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("issuer key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		return "", fmt.Errorf("write issuer key: %w", err)
	}
	return path, nil
}
