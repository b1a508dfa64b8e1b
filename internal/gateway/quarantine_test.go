package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/gateway/upstream"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// quarantineRoutesYAML routes GET (replicaRoutesYAML) and POST
// /v1/accounts to payments, served by two instances.
var quarantineRoutesYAML = fmt.Sprintf(replicaRoutesYAML, "") + `  - name: accounts-write
    methods: [POST]
    path: /v1/accounts
    service: payments
    upstream_path: /v1/payments
    waf: "off"
`

// denyFake is the control plane's deny list as the gateway sees it
// (workload.DenyList.IsDenied): denied SPIFFE IDs and serials.
type denyFake struct {
	mu      sync.Mutex
	ids     map[spiffeid.ID]bool
	serials map[string]bool
}

func newDenyFake() *denyFake {
	return &denyFake{ids: map[spiffeid.ID]bool{}, serials: map[string]bool{}}
}

func (d *denyFake) IsDenied(id spiffeid.ID, serial string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[id] || d.serials[serial]
}

func (d *denyFake) denyID(id spiffeid.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids[id] = true
}

func (d *denyFake) denySerial(serial string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.serials[serial] = true
}

// servedSerial returns the serial (hex) of the certificate the mTLS server
// at addr presents, as any client that connects sees it.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	var serial string
	errSeen := errors.New("seen")
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, // only reading the certificate, then hanging up
		MinVersion:         tls.VersionTLS12,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			serial = leaf.SerialNumber.Text(16)
			return errSeen
		},
	})
	if err == nil {
		conn.Close()
	}
	if serial == "" {
		t.Fatalf("no certificate from %s: %v", addr, err)
	}
	return serial
}

// quarantineEdge is a gateway in front of two instances of payments, each
// a real mesh Inbound with its own SVID, with deny as its deny list.
type quarantineEdge struct {
	iss      *testIssuer
	gw       *Gateway
	url      string
	client   *http.Client
	events   *recorder
	addrs    [2]string
	serials  [2]string
	services [2]*echo
}

func newQuarantineEdge(t *testing.T, deny *denyFake) *quarantineEdge {
	t.Helper()
	e := &quarantineEdge{iss: newTestIssuer(t), events: &recorder{}, services: [2]*echo{{}, {}}}
	routes, dir := writeRoutes(t, quarantineRoutesYAML)
	ca := mtlstest.NewCA(t, testTD)
	for i := range e.addrs {
		e.addrs[i] = startInbound(t, ca, testPaymentsID, e.services[i], e.iss.verifier(t, testPaymentsID, nil))
		e.serials[i] = servedSerial(t, e.addrs[i])
	}
	if e.serials[0] == e.serials[1] {
		t.Fatal("both instances present the same certificate")
	}
	decider, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"gateway.cedar": testPolicies}})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExchanger(ExchangerConfig{TokenURL: e.iss.url + "/token", ClientID: testExchangeCID, Key: e.iss.clientKey, HTTPClient: e.iss.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, roots := writeServingCert(t, dir)
	deps := Deps{
		Verifier: e.iss.verifier(t, testAudience, nil), Decider: decider, Exchanger: ex, Events: e.events,
		Resolver:   staticResolver{"payments": {spiffeid.RequireFromString(testPaymentsID), e.addrs[:]}},
		Source:     staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()},
		Registerer: prometheus.NewRegistry(),
	}
	if deny != nil {
		deps.Denied = deny.IsDenied
	}
	g, err := New(Config{Routes: routes, CertFile: certFile, KeyFile: keyFile}, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.gw = g
	e.url, e.client = serveGateway(t, g, roots)
	return e
}

// do sends method /v1/accounts with a valid token and returns the status
// and Retry-After. A POST is not idempotent: it is never retried on another
// instance.
func (e *quarantineEdge) do(t *testing.T, method, token string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"amount":1}`)
	}
	req, err := http.NewRequest(method, e.url+"/v1/accounts", body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// deniedEvents waits until want upstream-denied events arrived (they are
// sent asynchronously) and returns them by endpoint.
func (e *quarantineEdge) deniedEvents(t *testing.T, want int) map[string][]*audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := map[string][]*audit.Event{}
		n := 0
		for _, ev := range e.events.all() {
			if ev.StatusDetail == DetailUpstreamDenied {
				name := ""
				if len(ev.Resources) == 1 {
					name = ev.Resources[0].Name
				}
				out[name] = append(out[name], ev)
				n++
			}
		}
		if n >= want || time.Now().After(deadline) {
			// Let a duplicate, if one were sent, arrive too.
			if n >= want && want > 0 {
				time.Sleep(50 * time.Millisecond)
				out = map[string][]*audit.Event{}
				for _, ev := range e.events.all() {
					if ev.StatusDetail == DetailUpstreamDenied && len(ev.Resources) == 1 {
						out[ev.Resources[0].Name] = append(out[ev.Resources[0].Name], ev)
					}
				}
			}
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGatewaySkipsDeniedUpstreams is the attacker's side of load balancing:
// an instance whose certificate still verifies, but whose serial was
// revoked or whose SPIFFE ID was quarantined, must not receive a request,
// whether the gateway already holds a connection to it or not.
func TestGatewaySkipsDeniedUpstreams(t *testing.T) {
	t.Parallel()
	paymentsID := spiffeid.RequireFromString(testPaymentsID)
	const requests = 20
	for _, tc := range []struct {
		name string
		// warm sends requests before the denial, so that the gateway holds
		// kept-alive connections to both instances and knows their peers.
		warm bool
		// rotated makes the gateway believe instance 0 presented another,
		// valid certificate since: only its kept-alive connection still
		// carries the denied one.
		rotated bool
		// method is the method of the requests after the denial (GET if
		// empty); a POST is never retried, so a refusal on a connection
		// shows as a failed request.
		method string
		// deny denies on d given the instances' serials; nil: no deny list.
		deny func(d *denyFake, serials [2]string)
		// wantOK: every request after the denial is answered 200 by
		// instance 1; otherwise every one is refused and, once the gateway
		// has seen both instances, with 503 and Retry-After.
		wantOK bool
		// wantDenied are the instances (by index) audited as denied.
		wantDenied []int
	}{
		{name: "no deny list: both instances serve", warm: true, wantOK: true},
		{name: "revoked serial before the first connection", deny: func(d *denyFake, s [2]string) { d.denySerial(s[0]) },
			wantOK: true, wantDenied: []int{0}},
		{name: "revoked serial of a kept-alive instance", warm: true, method: http.MethodPost,
			deny: func(d *denyFake, s [2]string) { d.denySerial(s[0]) }, wantOK: true, wantDenied: []int{0}},
		{name: "revoked serial on a connection older than the instance's new certificate", warm: true, rotated: true,
			deny: func(d *denyFake, s [2]string) { d.denySerial(s[0]) }, wantOK: true, wantDenied: []int{0}},
		{name: "quarantined SPIFFE ID of a kept-alive service", warm: true, method: http.MethodPost,
			deny: func(d *denyFake, _ [2]string) { d.denyID(paymentsID) }, wantDenied: []int{0, 1}},
		{name: "quarantined SPIFFE ID before the first connection", deny: func(d *denyFake, _ [2]string) { d.denyID(paymentsID) },
			wantDenied: []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var deny *denyFake
			if tc.deny != nil {
				deny = newDenyFake()
			}
			e := newQuarantineEdge(t, deny)
			token := e.iss.token(nil)
			if tc.warm {
				for range 4 {
					if status, _ := e.do(t, http.MethodGet, token); status != http.StatusOK {
						t.Fatalf("warm-up: status %d", status)
					}
				}
				if e.services[0].hits.Load() == 0 || e.services[1].hits.Load() == 0 {
					t.Fatalf("warm-up did not reach both instances: %d, %d", e.services[0].hits.Load(), e.services[1].hits.Load())
				}
			}
			if tc.rotated {
				e.gw.upstreams.mu.Lock()
				pt := e.gw.upstreams.transports[paymentsID]
				e.gw.upstreams.mu.Unlock()
				pt.mu.Lock()
				pt.peers[e.addrs[0]] = peerRecord{peer: peer{id: paymentsID, serial: "fresh"}, checked: time.Now()}
				pt.mu.Unlock()
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			before := [2]int64{e.services[0].hits.Load(), e.services[1].hits.Load()}
			if tc.deny != nil {
				tc.deny(deny, e.serials)
			}

			var statuses []int
			lastRetryAfter := ""
			for range requests {
				status, ra := e.do(t, method, token)
				statuses = append(statuses, status)
				lastRetryAfter = ra
			}
			got := [2]int64{e.services[0].hits.Load() - before[0], e.services[1].hits.Load() - before[1]}
			switch {
			case tc.deny == nil:
				if got[0] == 0 || got[1] == 0 {
					t.Fatalf("hits %v: without a deny list both instances should serve", got)
				}
			case tc.wantOK:
				for i, s := range statuses {
					if s != http.StatusOK {
						t.Fatalf("request %d: status %d, want 200 from the remaining instance (all: %v)", i, s, statuses)
					}
				}
				if got[0] != 0 || got[1] != requests {
					t.Fatalf("hits after the denial %v, want [0 %d]: the denied instance was reached", got, requests)
				}
			default:
				for i, s := range statuses {
					if s < 500 {
						t.Fatalf("request %d: status %d, want a refusal (all: %v)", i, s, statuses)
					}
				}
				if last := statuses[len(statuses)-1]; last != http.StatusServiceUnavailable {
					t.Fatalf("last status %d, want 503 (all: %v)", last, statuses)
				}
				// Instances already seen are skipped without a dial: the
				// very first request is answered 503.
				if tc.warm && statuses[0] != http.StatusServiceUnavailable {
					t.Fatalf("first status %d, want 503 without dialing (all: %v)", statuses[0], statuses)
				}
				if n, err := strconv.Atoi(lastRetryAfter); err != nil || n < 1 {
					t.Fatalf("Retry-After %q, want whole seconds ≥ 1", lastRetryAfter)
				}
				if got != [2]int64{} {
					t.Fatalf("hits after the quarantine %v: a quarantined service was reached", got)
				}
			}

			events := e.deniedEvents(t, len(tc.wantDenied))
			if len(events) != len(tc.wantDenied) {
				t.Fatalf("denied-upstream events for %d endpoints, want %d: %v", len(events), len(tc.wantDenied), events)
			}
			for _, i := range tc.wantDenied {
				evs := events[e.addrs[i]]
				if len(evs) != 1 {
					t.Fatalf("instance %d (%s): %d events, want exactly 1 (no flood)", i, e.addrs[i], len(evs))
				}
				ev := evs[0]
				if ev.ClassUID != classAPIActivity || ev.StatusID != audit.StatusFailure || ev.Resources[0].UID != testPaymentsID ||
					ev.Unmapped["upstream_serial"] != e.serials[i] || ev.Unmapped["upstream_endpoint"] != e.addrs[i] {
					t.Fatalf("instance %d: event %+v", i, ev)
				}
			}
		})
	}
}

// TestUpstreamDeniedEventOncePerSerial checks the audit deduplication: the
// same endpoint and serial is reported once, another serial at the same
// endpoint again.
func TestUpstreamDeniedEventOncePerSerial(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	u := newUpstreams(nil, upstream.BreakerConfig{}, nil, slog.New(slog.DiscardHandler), time.Now, nil,
		func(spiffeid.ID, string) bool { return true },
		func(endpoint, id, serial string) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%s %s %s", endpoint, id, serial))
			mu.Unlock()
		})
	id := spiffeid.RequireFromString(testPaymentsID)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			u.report("10.0.0.1:8443", peer{id: id, serial: "a1"})
			u.report("10.0.0.2:8443", peer{id: id, serial: "a1"})
			u.report("10.0.0.1:8443", peer{id: id, serial: "b2"})
		})
	}
	wg.Wait()
	if len(got) != 3 {
		t.Fatalf("events %v, want one per endpoint and serial", got)
	}
}

// oneInstance starts one payments instance (a mesh Inbound) and returns its
// address, the serial of its certificate and the gateway's SVID source.
func oneInstance(t *testing.T) (string, string, staticSource) {
	t.Helper()
	ca := mtlstest.NewCA(t, testTD)
	iss := newTestIssuer(t)
	addr := startInbound(t, ca, testPaymentsID, &echo{}, iss.verifier(t, testPaymentsID, nil))
	return addr, servedSerial(t, addr), staticSource{svid: ca.SVID(t, testGatewayID), bundle: ca.Bundle()}
}

// TestUpstreamHandshakeRefusesDeniedPeer dials an agent through the
// gateway's transport: a peer whose certificate verifies but is denied is
// refused at the handshake, and what it presented is recorded either way.
func TestUpstreamHandshakeRefusesDeniedPeer(t *testing.T) {
	t.Parallel()
	addr, serial, src := oneInstance(t)
	paymentsID := spiffeid.RequireFromString(testPaymentsID)
	for _, tc := range []struct {
		name       string
		deny       func(d *denyFake)
		dialAs     spiffeid.ID // the service the transport expects
		wantDenied bool
		wantErr    bool
	}{
		{name: "nothing denied", deny: func(*denyFake) {}, dialAs: paymentsID},
		{name: "revoked serial", deny: func(d *denyFake) { d.denySerial(serial) }, dialAs: paymentsID, wantDenied: true, wantErr: true},
		{name: "quarantined SPIFFE ID", deny: func(d *denyFake) { d.denyID(paymentsID) }, dialAs: paymentsID, wantDenied: true, wantErr: true},
		{name: "another service's ID is refused by mtls first", deny: func(d *denyFake) { d.denySerial(serial) },
			dialAs: spiffeid.RequireFromString(testFlakyID), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDenyFake()
			tc.deny(d)
			var events sync.Map
			u := newUpstreams(src, upstream.BreakerConfig{}, nil, slog.New(slog.DiscardHandler), time.Now, nil, d.IsDenied,
				func(endpoint, id, serial string) { events.Store(endpoint+" "+id+" "+serial, true) })
			u.mu.Lock()
			pt := u.transport(tc.dialAs)
			u.mu.Unlock()
			conn, err := pt.DialTLSContext(t.Context(), "tcp", addr)
			if err == nil {
				conn.Close()
			}
			if (err != nil) != tc.wantErr || errors.Is(err, errPeerDenied) != tc.wantDenied {
				t.Fatalf("dial: %v (want error %v, denied %v)", err, tc.wantErr, tc.wantDenied)
			}
			_, audited := events.Load(addr + " " + testPaymentsID + " " + serial)
			if audited != tc.wantDenied {
				t.Fatalf("audited %v, want %v", audited, tc.wantDenied)
			}
			pt.mu.Lock()
			r, recorded := pt.peers[addr]
			p := r.peer
			pt.mu.Unlock()
			if wantRecorded := tc.dialAs == paymentsID; recorded != wantRecorded || (recorded && (p.id != paymentsID || p.serial != serial)) {
				t.Fatalf("recorded %v %+v, want %v", recorded, p, wantRecorded)
			}
			if q := u.quarantined(pt)(addr); q != tc.wantDenied {
				t.Fatalf("quarantined %v, want %v", q, tc.wantDenied)
			}
		})
	}
}

// TestDeniedEndpointIsReprobed: an endpoint skipped for a revoked serial is
// dialed again (a handshake, no request) once deniedReprobeInterval has
// passed, and takes traffic again once it presents a valid certificate; one
// skipped for a quarantined SPIFFE ID is not dialed again.
func TestDeniedEndpointIsReprobed(t *testing.T) {
	t.Parallel()
	addr, current, src := oneInstance(t)
	paymentsID := spiffeid.RequireFromString(testPaymentsID)
	for _, tc := range []struct {
		name      string
		deny      func(d *denyFake)
		wantAfter bool // quarantined once the probe had its chance
	}{
		{name: "revoked serial, new certificate since", deny: func(d *denyFake) { d.denySerial("0ld") }, wantAfter: false},
		{name: "quarantined SPIFFE ID", deny: func(d *denyFake) { d.denyID(paymentsID) }, wantAfter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDenyFake()
			tc.deny(d)
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }
			u := newUpstreams(src, upstream.BreakerConfig{}, nil, slog.New(slog.DiscardHandler), now, nil, d.IsDenied, nil)
			u.mu.Lock()
			pt := u.transport(paymentsID)
			u.mu.Unlock()
			// The gateway last saw the revoked certificate at addr.
			pt.record(addr, peer{id: paymentsID, serial: "0ld"}, now())
			quarantined := u.quarantined(pt)
			recorded := func() peerRecord {
				pt.mu.Lock()
				defer pt.mu.Unlock()
				return pt.peers[addr]
			}
			if !quarantined(addr) {
				t.Fatal("not quarantined with a denied record")
			}
			if r := recorded(); r.probing || r.serial != "0ld" {
				t.Fatalf("probed before the interval: %+v", r)
			}
			clock.Add(int64(deniedReprobeInterval + time.Second))
			if !quarantined(addr) {
				t.Fatal("not quarantined while the probe runs")
			}
			deadline := time.Now().Add(10 * time.Second)
			for recorded().probing && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			r := recorded()
			if r.probing {
				t.Fatal("probe did not finish")
			}
			wantSerial := current
			if tc.wantAfter {
				wantSerial = "0ld" // never dialed again
			}
			if r.serial != wantSerial {
				t.Fatalf("recorded serial %q, want %q", r.serial, wantSerial)
			}
			if got := quarantined(addr); got != tc.wantAfter {
				t.Fatalf("quarantined after the probe = %v, want %v", got, tc.wantAfter)
			}
		})
	}
}
