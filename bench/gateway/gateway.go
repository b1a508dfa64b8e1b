package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/gateway"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/sdk/authn"
)

// exchangeClientID is the gateway's OAuth client for token exchange
// (contract §6).
const exchangeClientID = "bank-api"

// routesFile is the bench's routes file: one route, POST /v1/echo to
// payments, with the bench scope, an OpenAPI document and the WAF in the
// mode that replaces {{WAF}} (block for the full gateway).
// The rate limits are real limiters with limits the load cannot reach
// (every request still takes a token from the per-IP and per-client
// buckets). Allowed requests are not audited (refusals are).
const routesFile = `rate_limits:
  per_ip: {rate: 1000000, burst: 1000000}
  per_client: {rate: 1000000, burst: 1000000}
  per_user: {rate: 1000000, burst: 1000000}
audit_allowed: false
routes:
  - name: ` + echoRoute + `
    methods: [POST]
    path: /v1/echo
    service: ` + paymentsName + `
    scopes: [` + benchScope + `]
    openapi: echo-openapi.yaml
    waf: {{WAF}}
    timeout: 5s
    retries: 0
    max_body_bytes: 64KiB
`

// openAPIDoc describes POST /v1/echo: a JSON body with an amount, a
// currency and a reference, nothing else.
const openAPIDoc = `openapi: 3.0.3
info:
  title: Bench echo API
  version: 1.0.0
paths:
  /v1/echo:
    post:
      operationId: echo
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [amount, currency, reference]
              properties:
                amount:
                  type: integer
                  minimum: 1
                currency:
                  type: string
                  pattern: '^[A-Z]{3}$'
                reference:
                  type: string
                  maxLength: 64
      responses:
        "200":
          description: the body, echoed
`

// startGateway starts the full gateway in this process and returns its
// base URL and a stop function: the real authn.Verifier against the control
// plane, Cedar over the reference bank policies, the OpenAPI validator, the
// WAF in block mode, token exchange at the control plane (cached after the
// first request) and mTLS to payments' agent.
func startGateway(ctx context.Context, e env, waf gateway.WAFMode) (url string, stop func(), err error) {
	routesText := strings.ReplaceAll(routesFile, "{{WAF}}", string(waf))
	for name, text := range map[string]string{"routes.yaml": routesText, "echo-openapi.yaml": openAPIDoc} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(text), 0o600); err != nil {
			return "", nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	routes, err := gateway.LoadRoutes(filepath.Join(e.dir, "routes.yaml"))
	if err != nil {
		return "", nil, err
	}
	if e.issuer.exchangeKey == nil {
		if e.issuer.exchangeKey, err = registerClient(ctx, e.issuer.srv.Identity(), &identity.Client{
			ID: exchangeClientID, Name: "gateway token exchange", Profile: identity.ProfileOAuth2,
			TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
			GrantTypes:              []string{identity.GrantTokenExchange},
			Scopes:                  []string{benchScope},
			Audiences:               []string{workloadID(paymentsName).String()},
		}); err != nil {
			return "", nil, err
		}
	}
	key := e.issuer.exchangeKey
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", nil, fmt.Errorf("exchange key: %w", err)
	}
	exchanger, err := gateway.NewExchanger(gateway.ExchangerConfig{
		TokenURL: e.issuer.srv.Issuer() + identity.PathToken, ClientID: exchangeClientID,
		Key: key, KeyID: base64.RawURLEncoding.EncodeToString(tp), HTTPClient: e.issuer.client,
	})
	if err != nil {
		return "", nil, fmt.Errorf("exchanger: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	verifier, err := authn.New(runCtx, authn.Config{
		Issuer: e.issuer.srv.Issuer(), Audience: apiAudience, HTTPClient: e.issuer.client, Logger: e.logger,
	})
	if err != nil {
		cancel()
		return "", nil, fmt.Errorf("token verifier: %w", err)
	}
	decider, err := newEvaluator(e.policyDir)
	if err != nil {
		cancel()
		return "", nil, err
	}
	src, err := loadSource(e.svidDir, gatewayName)
	if err != nil {
		cancel()
		return "", nil, err
	}
	g, addr, err := gateway.Start(runCtx, gateway.Config{Routes: routes, CertFile: e.cert.certFile, KeyFile: e.cert.keyFile},
		gateway.Deps{
			Verifier: verifier, Decider: decider, Source: src, Exchanger: exchanger, Events: e.events, Logger: e.logger,
			Resolver: staticResolver{paymentsName: {id: workloadID(paymentsName), endpoints: []string{e.upstream.PaymentsInbound}}},
		}, "127.0.0.1:0")
	if err != nil {
		cancel()
		return "", nil, fmt.Errorf("gateway: %w", err)
	}
	stop = func() {
		cancel()
		select {
		case <-g.Done():
		case <-time.After(15 * time.Second):
		}
	}
	return "https://" + addr.String(), stop, nil
}
