package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *caclient.APIError
	if !errors.As(err, &e) || e.Status != status || e.Code != code {
		t.Fatalf("error = %v, want %d %s", err, status, code)
	}
}

// TestAPIAgentFlow drives the agent's whole life through the real client:
// join, renew, entries, workload SVIDs, JWT-SVIDs, the bundle and events.
func TestAPIAgentFlow(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		ctx := context.Background()

		key := newKey(t)
		token := env.joinToken("node-1")
		res, err := env.client().Join(ctx, token, newCSR(t, key, nil))
		if err != nil {
			t.Fatalf("join: %v", err)
		}
		wantAgent := spiffeid.RequireFromPath(env.td, "/agent/node-1")
		if res.ID != wantAgent || len(res.SVID) != 2 || len(res.Bundle) == 0 || res.SVID[0].URIs[0].String() != wantAgent.String() {
			t.Fatalf("join result: %+v", res)
		}
		roots := x509.NewCertPool()
		for _, c := range res.Bundle {
			roots.AddCert(c)
		}
		if _, err := res.SVID[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("agent SVID does not verify against the bundle: %v", err)
		}

		// A join token is single-use; the reuse is audited.
		before := env.countEvents(3002, audit.StatusFailure)
		_, err = env.client().Join(ctx, token, newCSR(t, newKey(t), nil))
		wantCode(t, err, http.StatusUnauthorized, ca.CodeInvalidJoinToken)
		if env.countEvents(3002, audit.StatusFailure) <= before {
			t.Fatal("the reused join token was not audited")
		}

		agent := env.client().WithCertificate(tlsCert(res.SVID, key))
		id, chain, err := agent.Renew(ctx, newCSR(t, key, nil))
		if err != nil || id != wantAgent || chain[0].SerialNumber.Cmp(res.SVID[0].SerialNumber) == 0 {
			t.Fatalf("renew: %v %v", id, err)
		}

		mine := env.createEntry("spiffe://example.test/ns/bank/sa/payments", wantAgent.String(), "unix:uid:1001")
		anyAgent := env.createEntry("spiffe://example.test/ns/bank/sa/ledger", "", "unix:uid:1002", "unix:path:/usr/bin/ledger")
		other := env.createEntry("spiffe://example.test/ns/bank/sa/cards", "spiffe://example.test/agent/node-2", "unix:uid:1003")

		entries, err := agent.Entries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, e := range entries {
			got[e.ID] = true
		}
		if len(entries) != 2 || !got[mine.ID] || !got[anyAgent.ID] {
			t.Fatalf("entries of node-1: %+v", entries)
		}

		payments, _ := url.Parse(mine.SPIFFEID)
		cards, _ := url.Parse(other.SPIFFEID)
		svids, errs, err := agent.SVIDs(ctx, []caclient.SVIDRequest{
			{EntryID: mine.ID, CSR: newCSR(t, newKey(t), payments)},
			{EntryID: anyAgent.ID, CSR: newCSR(t, newKey(t), nil)},
			{EntryID: mine.ID, CSR: newCSR(t, newKey(t), cards)}, // asks for another workload's ID
			{EntryID: "ent_deleted", CSR: newCSR(t, newKey(t), nil)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(svids) != 2 || svids[0].ID.String() != mine.SPIFFEID || svids[1].ID.String() != anyAgent.SPIFFEID ||
			len(svids[0].SVID) != 2 || svids[0].ExpiresAt.IsZero() {
			t.Fatalf("svids: %+v", svids)
		}
		if len(errs) != 2 || errs[0].Code != ca.CodeInvalidCSR || errs[1].Code != httpapi.CodeNotFound {
			t.Fatalf("svid errors: %+v", errs)
		}

		// An entry of another agent refuses the batch, audited.
		before = env.countEvents(3002, audit.StatusFailure)
		_, _, err = agent.SVIDs(ctx, []caclient.SVIDRequest{{EntryID: other.ID, CSR: newCSR(t, newKey(t), nil)}})
		wantCode(t, err, http.StatusForbidden, ca.CodeForbidden)
		if n := env.countEvents(3002, audit.StatusFailure); n <= before {
			t.Fatal("the refusal of another agent's entry was not audited")
		}

		jwt, err := agent.JWTSVID(ctx, spiffeid.RequireFromString(mine.SPIFFEID), []string{"bank-api"})
		if err != nil || jwt == "" {
			t.Fatalf("jwt-svid: %v", err)
		}
		_, err = agent.JWTSVID(ctx, spiffeid.RequireFromString(other.SPIFFEID), []string{"bank-api"})
		wantCode(t, err, http.StatusForbidden, ca.CodeForbidden)

		b, err := env.client().Bundle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b.TrustDomain() != env.td || len(b.X509Authorities()) != len(env.a.X509Authorities()) || len(b.JWTAuthorities()) == 0 {
			t.Fatalf("bundle: %+v", b)
		}
		// The SVIDs and the JWT-SVID verify with go-spiffe against the bundle.
		if gotID, _, err := x509svid.Verify(svids[0].SVID, b); err != nil || gotID.String() != mine.SPIFFEID {
			t.Fatalf("x509svid.Verify: %v %v", gotID, err)
		}
		js, err := jwtsvid.ParseAndValidate(jwt, b, []string{"bank-api"})
		if err != nil || js.ID.String() != mine.SPIFFEID {
			t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
		}

		// A quarantined identity gets no more SVIDs: the item is refused.
		if st := env.admin(http.MethodPost, ca.PathQuarantine, ca.QuarantineRequest{SPIFFEID: mine.SPIFFEID, Reason: "incident"}, nil); st != http.StatusOK {
			t.Fatalf("quarantine: %d", st)
		}
		_, errs, err = agent.SVIDs(ctx, []caclient.SVIDRequest{{EntryID: mine.ID, CSR: newCSR(t, newKey(t), nil)}})
		if err != nil || len(errs) != 1 || errs[0].Code != ca.CodeDenied {
			t.Fatalf("svid of a quarantined identity: %+v %v", errs, err)
		}
		_, err = agent.JWTSVID(ctx, spiffeid.RequireFromString(mine.SPIFFEID), []string{"bank-api"})
		wantCode(t, err, http.StatusForbidden, ca.CodeDenied)

		ev := &audit.Event{ClassUID: 3002, ActivityID: 1, StatusID: audit.StatusFailure, StatusDetail: "workload attestation failed",
			Actor: &audit.Actor{AppUID: "spiffe://example.test/agent/someone-else"}}
		beforeFail := env.countEvents(3002, audit.StatusFailure)
		if err := agent.Events(ctx, []*audit.Event{ev}); err != nil {
			t.Fatalf("events: %v", err)
		}
		if env.countEvents(3002, audit.StatusFailure) != beforeFail+1 {
			t.Fatal("the agent's event was not appended")
		}
		err = agent.Events(ctx, []*audit.Event{{ClassUID: 1007, ActivityID: 1}})
		wantCode(t, err, http.StatusBadRequest, ca.CodeInvalidEvent)

		var certs ca.CertList
		if st := env.admin(http.MethodGet, ca.PathCertificates+"?limit=50", nil, &certs); st != http.StatusOK || len(certs.Certificates) < 4 {
			t.Fatalf("certificates: %d %+v", st, certs)
		}
	})
}

// TestAPIAgentRefusals presents the agent endpoints with everything that is
// not a valid agent SVID of this CA: each is refused with 401 and audited.
func TestAPIAgentRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		ctx := context.Background()
		agent, agentID, _ := env.agent("node-1")
		if _, err := agent.Entries(ctx); err != nil {
			t.Fatalf("a valid agent is refused: %v", err)
		}
		mine := env.createEntry("spiffe://example.test/ns/bank/sa/payments", "", "unix:uid:1001")

		// Another CA issues a certificate with the very same SPIFFE ID.
		foreignKey := newKey(t)
		uri, _ := url.Parse(agentID.String())
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "node-1"}, URIs: []*url.URL{uri},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, foreignKey.Public(), foreignKey)
		if err != nil {
			t.Fatal(err)
		}
		foreign, _ := x509.ParseCertificate(der)

		// A workload SVID of this CA is not an agent SVID.
		wkey := newKey(t)
		svids, _, err := agent.SVIDs(ctx, []caclient.SVIDRequest{{EntryID: mine.ID, CSR: newCSR(t, wkey, nil)}})
		if err != nil || len(svids) != 1 {
			t.Fatalf("workload svid: %v", err)
		}

		tests := []struct {
			name   string
			client func() *caclient.Client
		}{
			{"no client certificate", env.client},
			{"certificate from another CA", func() *caclient.Client {
				return env.client().WithCertificate(tlsCert([]*x509.Certificate{foreign}, foreignKey))
			}},
			{"workload SVID instead of an agent SVID", func() *caclient.Client {
				return env.client().WithCertificate(tlsCert(svids[0].SVID, wkey))
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := env.countEvents(3002, audit.StatusFailure)
				_, err := tt.client().Entries(ctx)
				wantCode(t, err, http.StatusUnauthorized, httpapi.CodeUnauthenticated)
				_, _, err = tt.client().Renew(ctx, newCSR(t, newKey(t), nil))
				wantCode(t, err, http.StatusUnauthorized, httpapi.CodeUnauthenticated)
				if n := env.countEvents(3002, audit.StatusFailure); n < before+2 {
					t.Fatalf("refusals not audited: %d failure events, had %d", n, before)
				}
			})
		}

		t.Run("quarantined agent", func(t *testing.T) {
			if st := env.admin(http.MethodPost, ca.PathQuarantine, ca.QuarantineRequest{SPIFFEID: agentID.String(), Reason: "stolen"}, nil); st != http.StatusOK {
				t.Fatalf("quarantine: %d", st)
			}
			before := env.countEvents(3002, audit.StatusFailure)
			_, err := agent.Entries(ctx)
			wantCode(t, err, http.StatusUnauthorized, httpapi.CodeUnauthenticated)
			if env.countEvents(3002, audit.StatusFailure) <= before {
				t.Fatal("refusal not audited")
			}
		})

		t.Run("expired agent certificate", func(t *testing.T) {
			agent2, _, _ := env.agent("node-2")
			env.clock.Advance(2 * time.Hour) // past the 1h SVID lifetime
			before := env.countEvents(3002, audit.StatusFailure)
			_, err := agent2.Entries(ctx)
			wantCode(t, err, http.StatusUnauthorized, httpapi.CodeUnauthenticated)
			if env.countEvents(3002, audit.StatusFailure) <= before {
				t.Fatal("refusal not audited")
			}
		})
	})
}

// TestAPIDenyListLongPoll: a long poll wakes within a second of a quarantine
// and ends when its request is canceled.
func TestAPIDenyListLongPoll(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		c := env.client()
		ctx := context.Background()
		_, next, err := c.DenyList(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}

		type answer struct {
			entries []caclient.DenyEntry
			next    int64
			err     error
			at      time.Time
		}
		got := make(chan answer, 1)
		go func() {
			e, n, err := c.DenyList(ctx, next, 20*time.Second)
			got <- answer{e, n, err, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond)
		quarantined := time.Now()
		if st := env.admin(http.MethodPost, ca.PathQuarantine, ca.QuarantineRequest{SPIFFEID: "spiffe://example.test/ns/bank/sa/payments"}, nil); st != http.StatusOK {
			t.Fatalf("quarantine: %d", st)
		}
		var a answer
		select {
		case a = <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("the long poll did not wake")
		}
		if a.err != nil || len(a.entries) != 1 || a.entries[0].Kind != "spiffe_id" || a.next <= next {
			t.Fatalf("deny list: %+v", a)
		}
		if d := a.at.Sub(quarantined); d > time.Second {
			t.Fatalf("the long poll woke %s after the quarantine", d)
		}

		// A canceled request ends the poll.
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		entries, _, err := c.DenyList(cctx, a.next, 20*time.Second)
		// The client sees its own cancellation, or, when the server's
		// empty answer to the ended request wins the race, nothing new.
		if (err == nil && len(entries) != 0) || time.Since(start) > 5*time.Second {
			t.Fatalf("canceled poll: %v, %d entries after %s", err, len(entries), time.Since(start))
		}
	})
}

// TestAPIAdminBadInput: bad input gets a clear error and changes nothing.
func TestAPIAdminBadInput(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		tests := []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"unknown selector", http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: "spiffe://example.test/a", Selectors: []string{"k8s:ns:x"}}, 400, ca.CodeInvalidEntry},
			{"no selector", http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: "spiffe://example.test/a"}, 400, ca.CodeInvalidEntry},
			{"foreign trust domain", http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: "spiffe://evil.test/a", Selectors: []string{"unix:uid:1"}}, 400, ca.CodeInvalidEntry},
			{"bad spiffe id", http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: "https://example.test/a", Selectors: []string{"unix:uid:1"}}, 400, ca.CodeInvalidEntry},
			{"bad ttl", http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: "spiffe://example.test/a", Selectors: []string{"unix:uid:1"}, TTL: "soon"}, 400, httpapi.CodeInvalidRequest},
			{"unknown field", http.MethodPost, ca.PathEntries, map[string]any{"spiffe_id": "spiffe://example.test/a", "admin": true}, 400, httpapi.CodeInvalidJSON},
			{"delete unknown entry", http.MethodDelete, ca.PathEntries + "/ent_nope", nil, 404, httpapi.CodeNotFound},
			{"bad quarantine id", http.MethodPost, ca.PathQuarantine, ca.QuarantineRequest{SPIFFEID: "nope"}, 400, httpapi.CodeInvalidRequest},
			{"control characters in reason", http.MethodPost, ca.PathRevoke, ca.RevokeRequest{Serial: "ab", Reason: "a\x1b[2Jb"}, 400, httpapi.CodeInvalidRequest},
			{"bad certificate limit", http.MethodGet, ca.PathCertificates + "?limit=0", nil, 400, httpapi.CodeInvalidRequest},
			{"bad deny list cursor", http.MethodGet, ca.PathDenyList + "?after=-1", nil, 400, httpapi.CodeInvalidRequest},
			{"bad deny list wait", http.MethodGet, ca.PathDenyList + "?wait=soon", nil, 400, httpapi.CodeInvalidRequest},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var eb httpapi.ErrorBody
				if st := env.admin(tt.method, tt.path, tt.body, &eb); st != tt.status || eb.Error.Code != tt.code {
					t.Fatalf("%d %s, want %d %s (%s)", st, eb.Error.Code, tt.status, tt.code, eb.Error.Message)
				}
			})
		}
		var list ca.EntryList
		if st := env.admin(http.MethodGet, ca.PathEntries, nil, &list); st != http.StatusOK || len(list.Entries) != 0 {
			t.Fatalf("bad input changed the entries: %+v", list)
		}
	})
}

// TestAPIJoinRefusals: a bad or expired join token is refused with
// invalid_join_token and audited.
func TestAPIJoinRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		ctx := context.Background()
		expired := env.joinToken("node-9")
		env.clock.Advance(11 * time.Minute)
		for name, token := range map[string]string{"unknown": "bm90LWEtdG9rZW4", "expired": expired, "empty": ""} {
			before := env.countEvents(3002, audit.StatusFailure) + env.countEvents(3004, audit.StatusFailure)
			_, err := env.client().Join(ctx, token, newCSR(t, newKey(t), nil))
			wantCode(t, err, http.StatusUnauthorized, ca.CodeInvalidJoinToken)
			if env.countEvents(3002, audit.StatusFailure)+env.countEvents(3004, audit.StatusFailure) <= before {
				t.Fatalf("%s join token: refusal not audited", name)
			}
		}
	})
}

// TestAPIAgentEvents: an agent appends its own events, always as itself;
// bad batches are refused whole.
func TestAPIAgentEvents(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newAPIEnv(t, db)
		ctx := context.Background()
		agent, agentID, _ := env.agent("node-1")

		spoof := &audit.Event{ClassUID: 3002, ActivityID: 1, StatusID: audit.StatusFailure, StatusDetail: "uid 1002 does not match",
			Actor:    &audit.Actor{AppName: "bulwark ca", AppUID: "spiffe://example.test/agent/someone-else"},
			Metadata: audit.Metadata{Product: "bulwark identity"}}
		if err := agent.Events(ctx, []*audit.Event{spoof}); err != nil {
			t.Fatalf("events: %v", err)
		}
		last := env.lastEvent()
		if last.Actor == nil || last.Actor.AppUID != agentID.String() || last.Actor.AppName != "bulwark agent" || last.Metadata.Product != "bulwark agent" {
			t.Fatalf("the agent's event was not attributed to it: %+v %+v", last.Actor, last.Metadata)
		}

		many := make([]*audit.Event, 101)
		for i := range many {
			many[i] = &audit.Event{ClassUID: 6003, ActivityID: 2}
		}
		size, _ := env.audit.Size(ctx)
		tests := []struct {
			name   string
			events []*audit.Event
		}{
			{"no events", nil},
			{"too many events", many},
			{"class not allowed", []*audit.Event{{ClassUID: 6002, ActivityID: 3}}},
			{"class name switches the class", []*audit.Event{{ClassUID: 3002, ClassName: "Process Activity", ActivityID: 1}}},
			{"unknown activity", []*audit.Event{{ClassUID: 3004, ActivityID: 77}}},
			{"one bad event refuses the batch", []*audit.Event{{ClassUID: 3004, ActivityID: 1}, {ClassUID: 3004, ActivityID: 1, SeverityID: 42}}},
			{"payload_ref set", []*audit.Event{{ClassUID: 3004, ActivityID: 1, PayloadRef: &audit.PayloadRef{Size: 1}}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := agent.Events(ctx, tt.events)
				var e *caclient.APIError
				if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
					t.Fatalf("error = %v, want 400", err)
				}
			})
		}
		if after, _ := env.audit.Size(ctx); after != size {
			t.Fatalf("refused batches were appended: size %d → %d", size, after)
		}
		// Without an agent SVID, nothing is appended but the refusal.
		err := env.client().Events(ctx, []*audit.Event{{ClassUID: 3004, ActivityID: 1}})
		wantCode(t, err, http.StatusUnauthorized, httpapi.CodeUnauthenticated)
		if last := env.lastEvent(); last.ClassUID != 3002 || last.StatusID != audit.StatusFailure {
			t.Fatalf("last event after an unauthenticated post: %+v", last)
		}
	})
}
