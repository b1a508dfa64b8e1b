package mesh_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// fakeTokens is a token verifier: "Bearer user" is alice's token of client
// bank-api, "Bearer svc" a client-credentials token of client batch,
// anything else is refused; down makes it unable to verify at all.
type fakeTokens struct{ down bool }

func (f fakeTokens) VerifyRequest(r *http.Request) (*authn.Principal, error) {
	if f.down {
		return nil, errors.New("issuer unreachable")
	}
	switch r.Header.Get("Authorization") {
	case "Bearer user":
		return &authn.Principal{Subject: "alice", ClientID: "bank-api"}, nil
	case "Bearer svc":
		return &authn.Principal{Subject: "batch", ClientID: "batch"}, nil
	}
	return nil, &authn.Error{Reason: authn.ReasonBadSignature, Detail: "signature mismatch"}
}

// allowed records OnAllowed events.
type allowed struct {
	mu     sync.Mutex
	events []mesh.AllowedEvent
}

func (a *allowed) add(e mesh.AllowedEvent) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
}

func (a *allowed) list() []mesh.AllowedEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]mesh.AllowedEvent(nil), a.events...)
}

func newTokenInbound(t *testing.T, ca *testCA, e *echo, tokens mesh.TokenVerifier, den *denials, al *allowed) string {
	t.Helper()
	deps := mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t), OnDenied: den.add, OnAllowed: al.add}
	if tokens != nil {
		deps.Tokens = tokens
	}
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, in)
}

func TestInboundInternalTokens(t *testing.T) {
	t.Parallel()
	ca, e := newCA(t, tdName), newEcho(t)
	den, al := &denials{}, &allowed{}
	withTokens := newTokenInbound(t, ca, e, fakeTokens{}, den, al)
	noTokens := newTokenInbound(t, ca, e, nil, &denials{}, &allowed{})
	down := newTokenInbound(t, ca, e, fakeTokens{down: true}, &denials{}, &allowed{})
	payments := mtlsClient(t, ca.source(t, paymentsID))

	tests := []struct {
		name         string
		addr         string
		auth         string
		wantStatus   int
		wantUser     string
		wantClient   string
		wantRefusal  string
		wantNoDenial bool
	}{
		{name: "user token", addr: withTokens, auth: "Bearer user", wantStatus: http.StatusOK, wantUser: "alice", wantClient: "bank-api"},
		{name: "client credentials token", addr: withTokens, auth: "Bearer svc", wantStatus: http.StatusOK, wantClient: "batch"},
		{name: "no token: service to service", addr: withTokens, wantStatus: http.StatusOK},
		{name: "forged token", addr: withTokens, auth: "Bearer forged", wantStatus: http.StatusUnauthorized, wantRefusal: authn.ReasonBadSignature},
		{name: "token without a verifier is dropped", addr: noTokens, auth: "Bearer user", wantStatus: http.StatusOK},
		{name: "verifier unavailable", addr: down, auth: "Bearer user", wantStatus: http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"X-Bulwark-User": "mallory", "X-Bulwark-Client": "evil", "X-Bulwark-Signature": "t=1,v1=00"}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			before, deniedBefore := e.hits.Load(), len(den.list())
			status, body := do(t, payments, http.MethodGet, "https://"+tc.addr+"/v1/entries", "", hdr)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tc.wantStatus, body)
			}
			if status != http.StatusOK {
				if e.hits.Load() != before {
					t.Fatal("the service was reached")
				}
				if strings.Contains(string(body), "signature mismatch") || strings.Contains(string(body), "unreachable") {
					t.Errorf("internal detail leaked: %s", body)
				}
				if tc.wantRefusal != "" {
					ev := den.list()
					if len(ev) != deniedBefore+1 || ev[len(ev)-1].TokenRefusal != tc.wantRefusal || ev[len(ev)-1].RequestID == "" {
						t.Fatalf("denials %+v, want one more with token refusal %q", ev, tc.wantRefusal)
					}
				}
				return
			}
			got := decodeEcho(t, body)
			if got.PeerErr != "" {
				t.Fatalf("signature: %s", got.PeerErr)
			}
			if a := got.Headers.Get("Authorization"); a != "" {
				t.Errorf("Authorization reached the service: %q", a)
			}
			if u := got.Headers.Get(peer.HeaderUser); u != tc.wantUser {
				t.Errorf("user %q, want %q", u, tc.wantUser)
			}
			if c := got.Headers.Get(peer.HeaderClient); c != tc.wantClient {
				t.Errorf("client %q, want %q", c, tc.wantClient)
			}
		})
	}
	ev := al.list()
	if len(ev) == 0 || ev[0].User != "alice" || ev[0].Client != "bank-api" || ev[0].Peer.String() != paymentsID || ev[0].RequestID == "" || ev[0].TraceID == "" {
		t.Fatalf("allowed events %+v", ev)
	}
}

func TestCorrelationPropagates(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := client(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name    string
		hdr     map[string]string
		wantRID string
		wantTID string
	}{
		{name: "kept", hdr: map[string]string{"X-Request-ID": "req-42", "traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, wantRID: "req-42", wantTID: traceID},
		{name: "malformed are replaced", hdr: map[string]string{"X-Request-ID": "bad id with spaces", "traceparent": "garbage"}},
		{name: "created", hdr: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, c, http.MethodGet, w.payments+"/ledger/x", "", tc.hdr)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			got := decodeEcho(t, body)
			rid := got.Headers.Get(correlation.HeaderRequestID)
			if !correlation.ValidRequestID(rid) || (tc.wantRID != "" && rid != tc.wantRID) {
				t.Errorf("request id %q, want %q", rid, tc.wantRID)
			}
			tid, _, _, ok := correlation.ParseTraceparent(got.Headers.Get(correlation.HeaderTraceparent))
			if !ok || (tc.wantTID != "" && tid != tc.wantTID) {
				t.Errorf("traceparent %q, want trace %q", got.Headers.Get(correlation.HeaderTraceparent), tc.wantTID)
			}
			if got.PeerErr != "" {
				t.Errorf("signature: %s", got.PeerErr)
			}
		})
	}
	// A denied call's event carries the caller's correlation.
	status, _ := do(t, c, http.MethodGet, w.notifications+"/ledger/x", "", map[string]string{"X-Request-ID": "req-denied", "traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"})
	if status != http.StatusForbidden {
		t.Fatalf("status %d, want 403", status)
	}
	ev := w.denied.list()
	if len(ev) != 1 || ev[0].RequestID != "req-denied" || ev[0].TraceID != traceID {
		t.Fatalf("denials %+v", ev)
	}
}

// TestServiceRefusesBypass: the service behind the agent, guarded by
// sdk/peer.Middleware, refuses a direct call and one with a forged
// signature, and reports both; a call through the agent passes.
func TestServiceRefusesBypass(t *testing.T) {
	t.Parallel()
	ca := newCA(t, tdName)
	var mu sync.Mutex
	var refused []error
	var seen []*peer.Identity
	svc := httptest.NewServer(peer.Middleware(testPeerKey, func(_ *http.Request, err error) {
		mu.Lock()
		refused = append(refused, err)
		mu.Unlock()
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := peer.FromContext(r.Context())
		mu.Lock()
		seen = append(seen, id)
		mu.Unlock()
	})))
	t.Cleanup(svc.Close)
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: svc.URL, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t)})
	if err != nil {
		t.Fatal(err)
	}
	agent := "https://" + serve(t, in)

	tests := []struct {
		name   string
		c      *http.Client
		url    string
		hdr    map[string]string
		status int
	}{
		{name: "direct call", c: client(t), url: svc.URL + "/v1/entries", status: http.StatusUnauthorized},
		{name: "direct call with forged identity", c: client(t), url: svc.URL + "/v1/entries",
			hdr: map[string]string{"X-Bulwark-Peer-ID": paymentsID, "X-Bulwark-Signature": "t=1,v1=" + strings.Repeat("ab", 32)}, status: http.StatusUnauthorized},
		{name: "through the agent", c: mtlsClient(t, ca.source(t, paymentsID)), url: agent + "/v1/entries?x=1", status: http.StatusOK},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, tc.c, http.MethodGet, tc.url, "", tc.hdr)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.status != http.StatusOK {
				if len(refused) != i+1 {
					t.Fatalf("%d refusals reported, want %d", len(refused), i+1)
				}
				return
			}
			if len(seen) != 1 || seen[0].Peer.String() != paymentsID || seen[0].RequestID == "" {
				t.Fatalf("identities %+v", seen)
			}
		})
	}
}

// TestInboundRefusesDeniedPeers: a peer whose certificate still verifies
// but whose serial or ID is on the deny list is refused and reported.
func TestInboundRefusesDeniedPeers(t *testing.T) {
	t.Parallel()
	ca, e, den := newCA(t, tdName), newEcho(t), &denials{}
	revoked := ca.source(t, paymentsID)
	good := ca.source(t, paymentsID)
	revokedSerial := revoked.svid.Certificates[0].SerialNumber.Text(16)
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t), OnDenied: den.add,
			Denied: func(id spiffeid.ID, serial string) bool { return serial == revokedSerial || id.String() == accountsID }})
	if err != nil {
		t.Fatal(err)
	}
	addr := "https://" + serve(t, in)
	tests := []struct {
		name   string
		src    staticSource
		status int
	}{
		{name: "revoked serial", src: revoked, status: http.StatusForbidden},
		{name: "quarantined ID", src: ca.source(t, accountsID), status: http.StatusForbidden},
		{name: "fresh certificate", src: good, status: http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, n := e.hits.Load(), len(den.list())
			status, body := do(t, mtlsClient(t, tc.src), http.MethodGet, addr+"/x", "", nil)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.status == http.StatusOK {
				return
			}
			if e.hits.Load() != before {
				t.Fatal("the service was reached")
			}
			ev := den.list()
			if len(ev) != n+1 || ev[n].Refusal != mesh.RefusalPeerDenied {
				t.Fatalf("denials %+v", ev)
			}
		})
	}
}

// rotatingSource is an SVID source whose SVID the test replaces or
// withdraws.
type rotatingSource struct {
	mu  sync.Mutex
	cur staticSource
	err error
}

func (s *rotatingSource) set(src staticSource, err error) {
	s.mu.Lock()
	s.cur, s.err = src, err
	s.mu.Unlock()
}

func (s *rotatingSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return s.cur.svid, nil
}

func (s *rotatingSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.GetX509BundleForTrustDomain(td)
}

// TestOutboundFollowsRotation: after the caller's SVID changes, the
// outbound stops using connections made with the old one (the inbound
// sees the new certificate), and with no SVID it refuses to call.
func TestOutboundFollowsRotation(t *testing.T) {
	t.Parallel()
	ca, e := newCA(t, tdName), newEcho(t)
	var mu sync.Mutex
	var serials []string
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t),
			Denied: func(_ spiffeid.ID, serial string) bool {
				mu.Lock()
				serials = append(serials, serial)
				mu.Unlock()
				return false
			}})
	if err != nil {
		t.Fatal(err)
	}
	ledgerAddr := serve(t, in)
	src := &rotatingSource{}
	first := ca.source(t, paymentsID)
	src.set(first, nil)
	out, err := mesh.NewOutbound(mesh.OutboundConfig{Self: spiffeid.RequireFromString(paymentsID)},
		mesh.OutboundDeps{Source: src, Resolver: staticResolver{"ledger": {spiffeid.RequireFromString(ledgerID), []string{ledgerAddr}}}})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + serve(t, out)
	c := client(t)
	call := func() int {
		status, _ := do(t, c, http.MethodGet, base+"/ledger/x", "", nil)
		return status
	}
	if s := call(); s != http.StatusOK {
		t.Fatalf("status %d", s)
	}
	second := ca.source(t, paymentsID)
	src.set(second, nil)
	if s := call(); s != http.StatusOK {
		t.Fatalf("after rotation: status %d", s)
	}
	mu.Lock()
	got := append([]string(nil), serials...)
	mu.Unlock()
	want := []string{first.svid.Certificates[0].SerialNumber.Text(16), second.svid.Certificates[0].SerialNumber.Text(16)}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("inbound saw serials %v, want %v", got, want)
	}
	src.set(second, errors.New("quarantined"))
	if s := call(); s != http.StatusBadGateway {
		t.Fatalf("without an SVID: status %d, want 502", s)
	}
}
