package main

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
)

// crsDirectives are the Core Rule Set directives internal/gateway/waf.go
// builds its engine from (block mode), copied here so that the cost of the
// rules can be measured apart from the gateway.
const crsDirectives = "Include @coraza.conf-recommended\n" +
	"Include @crs-setup.conf.example\n" +
	"Include @owasp_crs/*.conf\n" +
	"SecRuleEngine On\n" +
	"SecRequestBodyAccess On\n" +
	"SecResponseBodyAccess Off\n" +
	"SecAuditEngine Off\n" +
	"SecDebugLogLevel 0\n"

// BenchmarkCRS measures one transaction of the Core Rule Set on the bench's
// request (the same phases the gateway runs: connection, URI, headers,
// body, logging), with and without the bearer token among the headers and
// with and without the JSON body (a POST, or a GET without one): where the
// WAF's time goes.
//
//	go test -run '^$' -bench '^BenchmarkCRS$' -benchtime 2000x ./bench/gateway
func BenchmarkCRS(b *testing.B) {
	w, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(crsDirectives).
		WithRequestBodyAccess().WithRequestBodyLimit(64 << 10).WithRequestBodyInMemoryLimit(64 << 10))
	if err != nil {
		b.Fatal(err)
	}
	// A bearer token of the shape and length of the bench's ES256 access
	// token (481 characters; the bench's is 474).
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	token := "Bearer " + seg(`{"alg":"ES256","kid":"`+strings.Repeat("k", 43)+`","typ":"at+jwt"}`) + "." +
		seg(`{"iss":"https://127.0.0.1:40000","sub":"bench-client","aud":"bank-api","client_id":"bench-client",`+
			`"scope":"bench:write","iat":1795000000,"nbf":1795000000,"exp":1795003600,"jti":"`+strings.Repeat("0", 32)+`"}`) + "." +
		seg(strings.Repeat("\xa5", 64))
	for _, tc := range []struct {
		name        string
		token, body bool
	}{
		{"token+body", true, true},
		{"body", false, true},
		{"token", true, false},
		{"neither", false, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				tx := w.NewTransaction()
				tx.ProcessConnection("127.0.0.1", 40000, "", 0)
				method := http.MethodGet
				if tc.body {
					method = http.MethodPost
				}
				tx.ProcessURI("/v1/echo", method, "HTTP/1.1")
				tx.AddRequestHeader("Host", "127.0.0.1:8443")
				tx.AddRequestHeader("X-Request-Id", "5a5d155b99cafe4d1c3fc1a709128328")
				tx.AddRequestHeader("Traceparent", "00-5a5d155b99cafe4d1c3fc1a709128328-5a5d155b99cafe4d-01")
				if tc.token {
					tx.AddRequestHeader("Authorization", token)
				}
				if tc.body {
					tx.AddRequestHeader("Content-Type", "application/json")
					tx.AddRequestHeader("Content-Length", "57")
				}
				if it := tx.ProcessRequestHeaders(); it != nil {
					b.Fatalf("the request was blocked at the headers: rule %d", it.RuleID)
				}
				if tc.body {
					if it, _, err := tx.WriteRequestBody([]byte(requestBody)); err != nil || it != nil {
						b.Fatalf("body: %v %v", it, err)
					}
				}
				if it, err := tx.ProcessRequestBody(); err != nil || it != nil {
					b.Fatalf("the request was blocked at the body: %v %v", it, err)
				}
				tx.ProcessLogging()
				if err := tx.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
