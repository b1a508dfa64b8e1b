package policy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// testCA issues SPIFFE X.509-SVIDs for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// svid issues a certificate for the SPIFFE ID (and 127.0.0.1, for a server).
func (ca *testCA) svid(t *testing.T, spiffeID string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if server {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

const (
	envoySPIFFEID = "spiffe://bulwark.local/ns/bulwark/sa/gateway"
	paymentsID    = "spiffe://bulwark.local/ns/bank/sa/payments"
	ledgerID      = "spiffe://bulwark.local/ns/bank/sa/ledger"
	notifyID      = "spiffe://bulwark.local/ns/bank/sa/notifications"
)

// extAuthzServer starts the ext_authz service over mTLS and returns a
// client generated from go-control-plane.
func startExtAuthz(t *testing.T) (*testService, authv3.AuthorizationClient) {
	t.Helper()
	return startExtAuthzWith(t, bankSource(t))
}

func startExtAuthzWith(t *testing.T, src Source) (*testService, authv3.AuthorizationClient) {
	t.Helper()
	ts := startServiceWith(t, nil, src, DecisionConfig{}, businessHours)
	ca := newTestCA(t)
	srvCreds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.svid(t, "spiffe://bulwark.local/ns/bulwark/sa/server", true)},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13,
	})
	gs := grpc.NewServer(grpc.Creds(srvCreds))
	ts.svc.RegisterExtAuthz(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cliCreds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.svid(t, envoySPIFFEID, false)},
		RootCAs:      ca.pool, MinVersion: tls.VersionTLS13,
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ts, authv3.NewAuthorizationClient(conn)
}

// checkReq builds a CheckRequest.
type checkReq struct {
	source, dest string
	method       string
	headers      map[string]string
	ext          map[string]string
	jwt          map[string]any
}

func (c checkReq) proto(t *testing.T) *authv3.CheckRequest {
	t.Helper()
	method := c.method
	if method == "" {
		method = "GET"
	}
	attrs := &authv3.AttributeContext{
		Source:            &authv3.AttributeContext_Peer{Principal: c.source},
		Destination:       &authv3.AttributeContext_Peer{Principal: c.dest},
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Id: "req-1", Method: method, Path: "/x", Headers: c.headers}},
		ContextExtensions: c.ext,
	}
	if c.jwt != nil {
		payload, err := structpb.NewStruct(map[string]any{JWTPayloadKey: c.jwt})
		if err != nil {
			t.Fatal(err)
		}
		attrs.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{JWTAuthnFilter: payload}}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

const euInHours = `{"region":"eu","time":{"epoch":1767600123,"hour":10}}`

func TestExtAuthzCheck(t *testing.T) {
	t.Parallel()
	ts, client := startExtAuthz(t)
	alice := map[string]any{"sub": "alice", "email": "alice@bank.example", "scope": "accounts:read payments"}
	tests := []struct {
		name    string
		req     checkReq
		allow   bool
		reasons []string
		reason  string // substring of the denial's reason
	}{
		{"service principal allowed", checkReq{source: paymentsID, dest: ledgerID}, true, []string{"payments-call-ledger"}, ""},
		{"service principal denied", checkReq{source: notifyID, dest: ledgerID}, false, []string{}, "no policy permits"},
		{"JWT principal reads in business hours",
			checkReq{source: envoySPIFFEID, jwt: alice, ext: map[string]string{
				ExtResourceTypeKey: "Account", ExtResourceIDKey: "acc-eu-1", ExtContextKey: euInHours}},
			true, []string{"teller-read-accounts"}, ""},
		{"JWT principal wins over the peer's SPIFFE ID",
			checkReq{source: paymentsID, dest: ledgerID, jwt: map[string]any{"sub": "carol"}},
			false, []string{}, "Bulwark::Service is not a resource type of Bulwark::Action::\"read\""},
		{"a user's POST is a write",
			checkReq{method: "POST", jwt: alice, ext: map[string]string{
				ExtResourceTypeKey: "account", ExtResourceIDKey: "acc-eu-1", ExtContextKey: euInHours}},
			false, []string{}, "no policy permits"},
		{"route zone and region",
			checkReq{jwt: alice, ext: map[string]string{
				ExtResourceTypeKey: "account", ExtResourceIDKey: "acc-eu-1", ExtRegionKey: "us", ExtZoneKey: "internal",
				ExtContextKey: `{"time":{"epoch":1767600123,"hour":10}}`}},
			false, []string{"account-residency"}, "forbidden by policy account-residency"},
		{"route action and context: large transfer without MFA",
			checkReq{method: "POST", jwt: alice, ext: map[string]string{ExtActionKey: "transfer",
				ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-large", ExtRegionKey: "eu"}},
			false, []string{"large-transfer-needs-mfa"}, "forbidden by policy large-transfer-needs-mfa"},
		{"MFA and risk score from the JWT",
			checkReq{method: "POST", jwt: map[string]any{"sub": "alice", "amr": []any{"pwd", "mfa"}, "risk_score": 5},
				ext: map[string]string{ExtActionKey: "transfer", ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-large", ExtRegionKey: "eu"}},
			true, []string{"teller-transfer"}, ""},
		{"MFA without a risk score is least privileged",
			checkReq{method: "POST", jwt: map[string]any{"sub": "alice", "amr": []any{"mfa"}},
				ext: map[string]string{ExtActionKey: "transfer", ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-large", ExtRegionKey: "eu"}},
			false, []string{"large-transfer-needs-mfa"}, "forbidden"},
		{"amount header",
			checkReq{method: "POST", jwt: alice, headers: map[string]string{AmountHeader: "2500"},
				ext: map[string]string{ExtActionKey: "transfer", ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-small", ExtRegionKey: "eu"}},
			true, []string{"teller-transfer"}, ""},
		{"malformed amount header",
			checkReq{method: "POST", jwt: alice, headers: map[string]string{AmountHeader: "12.50"},
				ext: map[string]string{ExtActionKey: "transfer", ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-small", ExtRegionKey: "eu"}},
			false, []string{}, "malformed x-bulwark-amount"},
		{"no principal", checkReq{dest: ledgerID}, false, []string{}, "no principal"},
		{"client-credentials token: the client is the principal",
			checkReq{method: "POST", jwt: map[string]any{"sub": "alice", "client_id": "alice"}, ext: map[string]string{ExtActionKey: "transfer",
				ExtResourceTypeKey: "payment", ExtResourceIDKey: "pay-small", ExtRegionKey: "eu"}},
			false, []string{}, "Bulwark::Client is not a principal type"},
		{"route names a resource type without an id",
			checkReq{source: paymentsID, ext: map[string]string{ExtResourceTypeKey: "Service"}}, false, []string{}, "only one of"},
		{"no resource", checkReq{source: paymentsID}, false, []string{}, "no resource"},
		{"malformed route context",
			checkReq{source: paymentsID, dest: ledgerID, ext: map[string]string{ExtContextKey: `{"region":`}}, false, []string{}, "bulwark.context"},
		{"unknown action", checkReq{source: paymentsID, dest: ledgerID, ext: map[string]string{ExtActionKey: "teleport"}},
			false, []string{}, "unknown action"},
	}
	ids := map[string]bool{}
	for _, tc := range tests {
		resp, err := client.Check(context.Background(), tc.req.proto(t))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var id string
		if tc.allow {
			ok := resp.GetOkResponse()
			if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
				t.Errorf("%s: status %v %s, want OK", tc.name, codes.Code(resp.GetStatus().GetCode()), resp.GetDeniedResponse().GetBody())
				continue
			}
			id = headerValue(ok.GetHeaders(), DecisionIDHeader)
		} else {
			den := resp.GetDeniedResponse()
			if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || den == nil ||
				den.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
				t.Errorf("%s: status %v, want PERMISSION_DENIED with 403", tc.name, codes.Code(resp.GetStatus().GetCode()))
				continue
			}
			var body struct {
				Decision *bool    `json:"decision"`
				Reasons  []string `json:"reasons"`
				Reason   string   `json:"reason"`
			}
			if err := json.Unmarshal([]byte(den.GetBody()), &body); err != nil || body.Decision == nil || *body.Decision {
				t.Errorf("%s: denied body %q: %v", tc.name, den.GetBody(), err)
				continue
			}
			if !slices.Equal(body.Reasons, tc.reasons) || !strings.Contains(body.Reason, tc.reason) {
				t.Errorf("%s: reasons %v reason %q, want %v and %q", tc.name, body.Reasons, body.Reason, tc.reasons, tc.reason)
			}
			id = headerValue(den.GetHeaders(), DecisionIDHeader)
		}
		if id == "" {
			t.Errorf("%s: no %s header", tc.name, DecisionIDHeader)
		}
		ids[id] = tc.allow
	}

	// Every decision is audited with the enforcement point's SPIFFE ID as
	// the actor, and never a token's contents.
	waitFor(t, "every decision in the audit trail", func() bool { return len(decisionEvents(t, ts.audit)) >= len(ids) })
	events := decisionEvents(t, ts.audit)
	for id, allow := range ids {
		ev, ok := events[id]
		if !ok {
			t.Errorf("decision %s not audited", id)
			continue
		}
		if ev.Unmapped["api"] != APIExtAuthz || (ev.StatusID == audit.StatusSuccess) != allow {
			t.Errorf("decision %s: api %v status %d, want ext_authz and allow=%v", id, ev.Unmapped["api"], ev.StatusID, allow)
		}
		if ev.Actor == nil || ev.Actor.AppUID != envoySPIFFEID {
			t.Errorf("decision %s: actor %+v, want %s", id, ev.Actor, envoySPIFFEID)
		}
		raw, _ := json.Marshal(ev)
		for _, secret := range []string{"alice@bank.example", "accounts:read", "risk_score", "2500", "1767600123"} {
			if strings.Contains(string(raw), secret) {
				t.Errorf("decision %s: audit event carries token or context contents %q", id, secret)
			}
		}
	}
}

func headerValue(hs []*corev3.HeaderValueOption, key string) string {
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), key) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// TestExtAuthzRefusesUnauthenticatedPeers checks that the service, served
// with the control plane's mTLS, cannot be reached without a certificate.
func TestExtAuthzRefusesUnauthenticatedPeers(t *testing.T) {
	t.Parallel()
	ts := startService(t, nil, DecisionConfig{}, businessHours)
	ca := newTestCA(t)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.svid(t, "spiffe://bulwark.local/ns/bulwark/sa/server", true)},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13,
	})))
	ts.svc.RegisterExtAuthz(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, checkReq{source: paymentsID, dest: ledgerID}.proto(t))
	if err == nil {
		t.Fatal("check without a client certificate succeeded")
	}
	if n := len(decisionEvents(t, ts.audit)); n != 0 {
		t.Errorf("%d decisions made for an unauthenticated peer", n)
	}
}

// TestExtAuthzAgreesWithPolicyTests runs the policy test cases written
// beside the bank policies through ext_authz: a user principal as the
// verified JWT's subject, a service as the peer's SPIFFE ID, and the
// action, resource and context from the route's context extensions.
func TestExtAuthzAgreesWithPolicyTests(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{decisionBankDir, exampleBankDir} {
		t.Run(filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			src := &swapSource{}
			_, client := startExtAuthzWith(t, src)
			n := 0
			for file, tf := range policyTestFiles(t, dir) {
				src.p.Store(policySnapshot(t, dir, tf.Entities))
				for _, tc := range tf.Cases {
					if len(tc.Entities) > 0 {
						continue // per-case entities are not an ext_authz input
					}
					if checkPolicyCase(t, client, file, tf, tc) {
						n++
					}
				}
			}
			if n < 10 {
				t.Fatalf("only %d cases ran", n)
			}
			t.Logf("%d policy test cases agree", n)
		})
	}
}

// checkPolicyCase asks ext_authz the question of one policy test case; it
// reports false for a case whose principal ext_authz cannot express.
func checkPolicyCase(t *testing.T, client authv3.AuthorizationClient, file string, tf TestFile, tc TestCase) bool {
	t.Helper()
	ctx := map[string]json.RawMessage{}
	for _, raw := range []json.RawMessage{tf.Context, tc.Context} {
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	routeCtx, err := json.Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := checkReq{ext: map[string]string{ExtActionKey: tc.Action, ExtResourceTypeKey: tc.Resource.Type,
		ExtResourceIDKey: tc.Resource.ID, ExtContextKey: string(routeCtx)}}
	switch requestEntityType(tc.Principal.Type) {
	case "Bulwark::User":
		req.jwt = map[string]any{"sub": tc.Principal.ID}
	case "Bulwark::Service":
		req.source = tc.Principal.ID
	default:
		return false
	}
	resp, err := client.Check(context.Background(), req.proto(t))
	if err != nil {
		t.Fatalf("%s %q: %v", file, tc.Name, err)
	}
	got, reasons := "deny", []string{}
	if resp.GetOkResponse() != nil {
		got = "allow"
	} else {
		var body struct {
			Reasons []string `json:"reasons"`
			Reason  string   `json:"reason"`
		}
		if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil {
			t.Fatal(err)
		}
		reasons = body.Reasons
		if got != tc.Expect {
			t.Logf("%s %q: denied: %s", file, tc.Name, body.Reason)
		}
	}
	if got != tc.Expect {
		t.Errorf("%s %q: %s, want %s", file, tc.Name, got, tc.Expect)
	}
	if tc.Reasons != nil && got == "deny" && !slices.Equal(reasons, *tc.Reasons) {
		t.Errorf("%s %q: reasons %v, want %v", file, tc.Name, reasons, *tc.Reasons)
	}
	return true
}
