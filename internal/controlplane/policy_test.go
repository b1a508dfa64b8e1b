package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// referenceDir holds the reference bank policies and their test cases.
var referenceDir = filepath.Join("..", "..", "examples", "policies", "bank")

// answer is one decision as an API reported it.
type answer struct {
	allowed bool
	reasons []string
}

func (a answer) String() string {
	word := "deny"
	if a.allowed {
		word = "allow"
	}
	return fmt.Sprintf("%s %v", word, a.reasons)
}

// TestReferenceCasesAgreeAcrossAPIs replays every case of the reference
// policy tests through the three ways Bulwark decides — the AuthZEN HTTP
// API, the Envoy ext_authz gRPC API (through a client generated from the
// go-control-plane types) and sdk/authz evaluating a signed bundle
// locally — and checks that each gives the answer and the determining
// policies the test file expects, as `bulwark policy test` does.
func TestReferenceCasesAgreeAcrossAPIs(t *testing.T) {
	t.Parallel()
	rep, err := policy.RunTests(referenceDir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Passed == 0 {
		t.Fatalf("bulwark policy test: %d passed, %d failed", rep.Passed, rep.Failed)
	}

	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Policy.ExtAuthzListen = "127.0.0.1:0"
	srv, client := start(t, cfg)
	admin := adminCaller(t, srv, client)

	// The policies go in through the admin API, as `bulwark policy push` sends them.
	files := map[string]string{}
	names, err := policy.PolicyFiles(referenceDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(referenceDir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	if st, body := admin(http.MethodPost, "/v1/policy/versions", map[string]any{"files": files, "comment": "reference"}); st != http.StatusCreated {
		t.Fatalf("push: %d %s", st, body)
	}

	ext := extAuthzClient(t, srv)
	embedded := embeddedClient(t, srv, client)

	tests, err := filepath.Glob(filepath.Join(referenceDir, "*"+policy.TestExt))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	total := 0
	for _, path := range tests {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tf, err := policy.DecodeTestFile(raw)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		lastEntities := ""
		for _, c := range tf.Cases {
			name := filepath.Base(path) + "/" + c.Name
			// The entity store holds the file's entities and the case's.
			ents := mergeEntityJSON(t, tf.Entities, c.Entities)
			if ents != lastEntities {
				if st, body := admin(http.MethodPut, "/v1/policy/entities", json.RawMessage(ents)); st != http.StatusOK {
					t.Fatalf("%s: replace entities: %d %s", name, st, body)
				}
				lastEntities = ents
			}
			ctxJSON := mergeContextJSON(t, tf.Context, c.Context)
			want := answer{allowed: c.Expect == "allow"}
			if c.Reasons != nil {
				want.reasons = slices.Sorted(slices.Values(*c.Reasons))
			}

			got := map[string]answer{
				"authzen":   authzenDecide(t, client, srv, c, ctxJSON),
				"ext_authz": extAuthzDecide(t, ext, c, ctxJSON),
				"sdk/authz": embeddedDecide(t, embedded, srv, c, ctxJSON),
			}
			for api, a := range got {
				if a.allowed != want.allowed || (c.Reasons != nil && !slices.Equal(a.reasons, want.reasons)) {
					t.Errorf("%s through %s: got %v, want %v", name, api, a, want)
				}
			}
			total++
		}
	}
	if total != rep.Passed {
		t.Errorf("replayed %d cases, bulwark policy test ran %d", total, rep.Passed)
	}

	// Every decision of the decision service reaches the audit trail, with
	// its reasons: one per case through AuthZEN and one through ext_authz.
	var decisions []audit.Event
	deadline := time.Now().Add(20 * time.Second)
	for {
		decisions = decisions[:0]
		for _, ev := range audittest.Events(t, srv.AuditLog()) {
			if api, _ := ev.Unmapped["api"].(string); ev.ClassUID == 6003 && (api == "authzen" || api == "ext_authz") {
				decisions = append(decisions, ev)
			}
		}
		if len(decisions) >= 2*total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(decisions) != 2*total {
		t.Fatalf("%d decisions in the audit trail, want %d", len(decisions), 2*total)
	}
	withReasons := 0
	for _, ev := range decisions {
		if _, ok := ev.Unmapped["reasons"]; !ok {
			t.Fatalf("decision event without reasons: %+v", ev)
		}
		if r, _ := ev.Unmapped["reasons"].([]any); len(r) > 0 {
			withReasons++
		}
	}
	if withReasons == 0 {
		t.Fatal("no decision event names a determining policy")
	}
	t.Logf("%d reference cases agree across policy test, AuthZEN, ext_authz and sdk/authz", total)
}

// adminCaller returns a function calling the admin API with the admin
// credential and a JSON body.
func adminCaller(t *testing.T, srv *controlplane.Server, client *http.Client) func(method, path string, body any) (int, []byte) {
	return func(method, path string, body any) (int, []byte) {
		t.Helper()
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(method, srv.URL()+path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+srv.NewAdminCredential)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
}

func mergeEntityJSON(t *testing.T, base, over json.RawMessage) string {
	t.Helper()
	all := cedar.EntityMap{}
	for _, raw := range []json.RawMessage{base, over} {
		if len(raw) == 0 {
			continue
		}
		var m cedar.EntityMap
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		maps.Copy(all, m)
	}
	b, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mergeContextJSON(t *testing.T, base, over json.RawMessage) map[string]json.RawMessage {
	t.Helper()
	merged := map[string]json.RawMessage{}
	for _, raw := range []json.RawMessage{base, over} {
		if len(raw) == 0 {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		maps.Copy(merged, m)
	}
	return merged
}

func authzenDecide(t *testing.T, client *http.Client, srv *controlplane.Server, c policy.TestCase, ctx map[string]json.RawMessage) answer {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"subject":  map[string]string{"type": c.Principal.Type, "id": c.Principal.ID},
		"action":   map[string]string{"name": c.Action},
		"resource": map[string]string{"type": c.Resource.Type, "id": c.Resource.ID},
		"context":  ctx,
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, srv.AuthZENURL()+"/access/v1/evaluation", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.NewAdminCredential)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("AuthZEN %s: %d %s", c.Name, resp.StatusCode, raw)
	}
	var out struct {
		Decision bool `json:"decision"`
		Context  struct {
			Reasons []string `json:"reasons"`
		} `json:"context"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("AuthZEN %s: %v: %s", c.Name, err, raw)
	}
	return answer{allowed: out.Decision, reasons: sortedOrNil(out.Context.Reasons)}
}

// svidTLS returns a TLS client certificate: an X.509-SVID for id issued by
// the control plane's CA.
func svidTLS(t *testing.T, srv *controlplane.Server, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(id)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{sid.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := srv.CA().SignX509SVID(context.Background(), csr, sid, 0, spiffeid.ID{})
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: iss.Certificates[0]}
	for _, c := range iss.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

func servingRoots(t *testing.T, srv *controlplane.Server) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

func extAuthzClient(t *testing.T, srv *controlplane.Server) authv3.AuthorizationClient {
	t.Helper()
	cert := svidTLS(t, srv, "spiffe://bulwark.local/ns/mesh/sa/envoy")
	creds := credentials.NewTLS(&tls.Config{RootCAs: servingRoots(t, srv), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	conn, err := grpc.NewClient(srv.ExtAuthzAddr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func extAuthzDecide(t *testing.T, client authv3.AuthorizationClient, c policy.TestCase, ctx map[string]json.RawMessage) answer {
	t.Helper()
	ctxJSON, err := json.Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	attrs := &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{},
		Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://bulwark.local/ns/bank/sa/gateway"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: http.MethodPost, Path: "/", Headers: map[string]string{},
		}},
		ContextExtensions: map[string]string{
			"bulwark.action":        c.Action,
			"bulwark.resource_type": c.Resource.Type,
			"bulwark.resource_id":   c.Resource.ID,
			"bulwark.context":       string(ctxJSON),
		},
	}
	switch strings.TrimPrefix(c.Principal.Type, policy.Namespace+"::") {
	case "Service":
		attrs.Source.Principal = c.Principal.ID
	case "Client":
		attrs.MetadataContext = jwtMetadata(t, map[string]any{"sub": c.Principal.ID, "client_id": c.Principal.ID})
	default:
		attrs.MetadataContext = jwtMetadata(t, map[string]any{"sub": c.Principal.ID})
	}
	ctx2, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Check(ctx2, &authv3.CheckRequest{Attributes: attrs})
	if err != nil {
		t.Fatalf("ext_authz %s: %v", c.Name, err)
	}
	var headers []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		headers = ok.GetHeaders()
	} else if denied := resp.GetDeniedResponse(); denied != nil {
		headers = denied.GetHeaders()
	}
	var reasons []string
	for _, h := range headers {
		if h.GetHeader().GetKey() == "x-bulwark-decision-reasons" && h.GetHeader().GetValue() != "" {
			reasons = strings.Split(h.GetHeader().GetValue(), ",")
		}
	}
	return answer{allowed: resp.GetStatus().GetCode() == 0, reasons: sortedOrNil(reasons)}
}

func jwtMetadata(t *testing.T, payload map[string]any) *corev3.Metadata {
	t.Helper()
	s, err := structpb.NewStruct(map[string]any{"jwt_payload": payload})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": s}}
}

// embeddedClient runs an sdk/authz client against the control plane's
// bundle endpoint, as a service embedding the evaluator would.
func embeddedClient(t *testing.T, srv *controlplane.Server, client *http.Client) *authz.Client {
	t.Helper()
	hc := &http.Client{Transport: client.Transport}
	c, err := authz.New(authz.Config{
		URL:         srv.URL(),
		HTTPClient:  hc,
		Token:       func(context.Context) (string, error) { return srv.NewAdminCredential, nil },
		TrustedKeys: srv.PolicyRepository().PublicKeys(),
		PollWait:    5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func embeddedDecide(t *testing.T, c *authz.Client, srv *controlplane.Server, tc policy.TestCase, ctx map[string]json.RawMessage) answer {
	t.Helper()
	// The entities just changed: wait for the bundle that carries them.
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitVersion(wctx, srv.PolicyRepository().Snapshot().BundleVersion); err != nil {
		t.Fatalf("sdk/authz %s: %v", tc.Name, err)
	}
	b, err := json.Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rec cedar.Record
	if err := rec.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	d := c.Decide(authz.Request{
		Principal: uid(tc.Principal), Action: policy.ActionUID(tc.Action), Resource: uid(tc.Resource), Context: rec,
	})
	return answer{allowed: d.Allowed, reasons: sortedOrNil(d.Reasons)}
}

func uid(r policy.EntityRef) cedar.EntityUID {
	typ := r.Type
	if !strings.Contains(typ, "::") {
		typ = policy.Namespace + "::" + typ
	}
	return cedar.NewEntityUID(cedar.EntityType(typ), cedar.String(r.ID))
}

func sortedOrNil(s []string) []string {
	if len(s) == 0 {
		return []string{}
	}
	return slices.Sorted(slices.Values(s))
}

// TestEnforcementPointAuthentication: the decision service and the bundle
// endpoint answer workloads presenting an X.509-SVID of this CA, and the
// admin credential; a forged SVID (right SPIFFE ID, another CA) and no
// credential at all are refused, and the forged certificate is audited —
// over HTTPS and on the ext_authz gRPC listener.
func TestEnforcementPointAuthentication(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Policy.ExtAuthzListen = "127.0.0.1:0"
	srv, _ := start(t, cfg)
	roots := servingRoots(t, srv)
	const gateway = "spiffe://bulwark.local/ns/bank/sa/gateway"
	good := svidTLS(t, srv, gateway)
	forged := forgedSVID(t, gateway)

	body := `{"subject":{"type":"Service","id":"` + gateway + `"},"action":{"name":"call"},"resource":{"type":"Service","id":"` + gateway + `"}}`
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		bearer string
		path   string
		want   int
	}{
		{"SVID asks AuthZEN", &good, "", "/access/v1/evaluation", http.StatusOK},
		{"SVID fetches the bundle", &good, "", "/v1/policy/bundle", http.StatusOK},
		{"admin credential asks AuthZEN", nil, srv.NewAdminCredential, "/access/v1/evaluation", http.StatusOK},
		{"forged SVID asks AuthZEN", &forged, "", "/access/v1/evaluation", http.StatusUnauthorized},
		{"forged SVID fetches the bundle", &forged, "", "/v1/policy/bundle", http.StatusUnauthorized},
		{"nothing", nil, "", "/access/v1/evaluation", http.StatusUnauthorized},
		{"wrong bearer", nil, "bwk_forged", "/v1/policy/bundle", http.StatusUnauthorized},
		{"SVID appends an audit event", &good, "", "/v1/audit/events", http.StatusCreated},
		{"forged SVID appends an audit event", &forged, "", "/v1/audit/events", http.StatusUnauthorized},
		{"nothing appends an audit event", nil, "", "/v1/audit/events", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg := &tls.Config{RootCAs: roots}
			if tc.cert != nil {
				tlsCfg.Certificates = []tls.Certificate{*tc.cert}
			}
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
			method, rd := http.MethodGet, io.Reader(nil)
			switch {
			case strings.HasPrefix(tc.path, "/access/"):
				method, rd = http.MethodPost, strings.NewReader(body)
			case tc.path == "/v1/audit/events":
				// The event claims another reporter; the server overwrites it.
				method, rd = http.MethodPost, strings.NewReader(`{"events":[{"class_uid":6003,"activity_id":1,"status_id":2,`+
					`"status_detail":"denied by policy","unmapped":{"reported_by":"spiffe://bulwark.local/ns/bank/sa/ledger"}}]}`)
			}
			req, err := http.NewRequest(method, srv.URL()+tc.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, raw)
			}
		})
	}

	// ext_authz: the forged SVID does not get past the TLS handshake.
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{forged}, ServerName: "127.0.0.1"})
	conn, err := grpc.NewClient(srv.ExtAuthzAddr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{}); err == nil {
		t.Fatal("ext_authz answered a client with a forged SVID")
	}

	// Both forged attempts and the gRPC one are in the audit trail.
	refused, reported := 0, 0
	for _, ev := range audittest.Events(t, srv.AuditLog()) {
		if ev.ClassUID == 3002 && ev.StatusID == audit.StatusFailure && strings.HasPrefix(ev.StatusDetail, "enforcement point refused") {
			refused++
		}
		if ev.ClassUID == 6003 && ev.StatusDetail == "denied by policy" {
			reported++
			if got := ev.Unmapped["reported_by"]; got != gateway {
				t.Errorf("an event appended with the gateway's SVID has reported_by %v", got)
			}
		}
	}
	if refused < 4 {
		t.Fatalf("%d refused enforcement points audited, want at least 4", refused)
	}
	if reported != 1 {
		t.Fatalf("%d events appended with an SVID, want 1", reported)
	}
}

// forgedSVID returns a certificate for id from a CA the control plane
// does not trust.
func forgedSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
