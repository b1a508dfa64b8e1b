package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// joinAgent creates a token for name and joins with it.
func (env *caEnv) joinAgent(name string) *Issued {
	env.t.Helper()
	ctx := context.Background()
	tok, _, _, err := env.a.CreateJoinToken(ctx, name, 0)
	if err != nil {
		env.t.Fatal(err)
	}
	iss, err := env.a.Join(ctx, tok, csrFor(env.t, newP256(env.t), nil))
	if err != nil {
		env.t.Fatal(err)
	}
	return iss
}

func TestJoin(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		tok, agentID, expires, err := env.a.CreateJoinToken(ctx, "node-1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if agentID.String() != "spiffe://example.test/agent/node-1" || expires.Sub(env.clock.Now()) > 10*time.Minute {
			t.Fatalf("agent %s, expires %v", agentID, expires)
		}
		// The token is stored only hashed.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ca_join_tokens WHERE token_hash = ?", tok).Scan(&n); err != nil || n != 0 {
			t.Fatalf("token stored in clear (%d, %v)", n, err)
		}
		// A bad CSR is refused and does not burn the token.
		if _, err := env.a.Join(ctx, tok, csrWithURI(t, newP256(t), "spiffe://example.test/agent/node-2")); !errors.Is(err, ErrInvalid) {
			t.Fatalf("CSR for another agent: %v; want ErrInvalid", err)
		}
		iss, err := env.a.Join(ctx, tok, csrWithURI(t, newP256(t), agentID.String()))
		if err != nil {
			t.Fatal(err)
		}
		if iss.ID != agentID {
			t.Fatalf("joined as %s", iss.ID)
		}
		got, err := env.a.VerifyAgent(iss.Certificates)
		if err != nil || got != agentID {
			t.Fatalf("VerifyAgent = %v, %v", got, err)
		}
		if n := env.countEvents(classAuthentication, actLogon, audit.StatusSuccess); n != 1 {
			t.Fatalf("%d successful join events; want 1", n)
		}
		for _, e := range env.events() {
			b, _ := e.Canonical()
			if strings.Contains(string(b), tok) {
				t.Fatal("the join token appears in the audit log")
			}
		}
	})
}

func TestJoinTokenSingleUseUnderConcurrency(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		tok, _, _, err := env.a.CreateJoinToken(ctx, "node-1", 0)
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i] = csrFor(t, newP256(t), nil)
		}
		var (
			wg         sync.WaitGroup
			mu         sync.Mutex
			ok, reused int
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := env.a.Join(ctx, tok, csrs[i])
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrTokenInvalid):
					reused++
				default:
					t.Errorf("join: %v", err)
				}
			}()
		}
		wg.Wait()
		if ok != 1 || reused != n-1 {
			t.Fatalf("%d joins succeeded, %d refused; want 1 and %d", ok, reused, n-1)
		}
		if got := env.countEvents(classAuthentication, actLogon, audit.StatusFailure); got != n-1 {
			t.Fatalf("%d failed join events; want %d", got, n-1)
		}
	})
}

func TestJoinRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		expired, _, _, err := env.a.CreateJoinToken(ctx, "node-1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		used, _, _, err := env.a.CreateJoinToken(ctx, "node-2", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.a.Join(ctx, used, csrFor(t, newP256(t), nil)); err != nil {
			t.Fatal(err)
		}
		quarantined, qid, _, err := env.a.CreateJoinToken(ctx, "node-3", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.a.Quarantine(ctx, qid, "decommissioned"); err != nil {
			t.Fatal(err)
		}
		env.clock.Advance(2 * time.Minute)
		tests := []struct {
			name  string
			token string
			want  error
		}{
			{"unknown", "bm90LWEtdG9rZW4", ErrTokenInvalid},
			{"empty", "", ErrTokenInvalid},
			{"huge", strings.Repeat("a", 10000), ErrTokenInvalid},
			{"expired", expired, ErrTokenInvalid},
			{"reused", used, ErrTokenInvalid},
			{"quarantined agent", quarantined, ErrDenied},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := env.a.Join(ctx, tc.token, csrFor(t, newP256(t), nil)); !errors.Is(err, tc.want) {
					t.Fatalf("err = %v; want %v", err, tc.want)
				}
			})
		}
		if n := env.countEvents(classAuthentication, actLogon, audit.StatusFailure); n != len(tests) {
			t.Fatalf("%d failed join events; want %d", n, len(tests))
		}
		for _, name := range []string{"", "a/b", "..", "node 1"} {
			if _, _, _, err := env.a.CreateJoinToken(ctx, name, 0); !errors.Is(err, ErrInvalid) {
				t.Fatalf("agent name %q: %v; want ErrInvalid", name, err)
			}
		}
		if _, _, _, err := env.a.CreateJoinToken(ctx, "node-9", 48*time.Hour); !errors.Is(err, ErrInvalid) {
			t.Fatalf("48h token: %v; want ErrInvalid", err)
		}
	})
}

func TestVerifyAgentRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		good := env.joinAgent("node-1")
		revoked := env.joinAgent("node-2")
		quarantined := env.joinAgent("node-3")
		if err := env.a.Revoke(ctx, revoked.Serial, "key leaked"); err != nil {
			t.Fatal(err)
		}
		if err := env.a.Quarantine(ctx, quarantined.ID, "node compromised"); err != nil {
			t.Fatal(err)
		}
		workload, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, good.ID)
		if err != nil {
			t.Fatal(err)
		}
		// An agent SVID for the same trust domain from another CA.
		other := newCAEnv(t, storetest.Open(t, db.Driver()))
		foreign := other.joinAgent("node-1")

		tests := []struct {
			name  string
			chain []*x509.Certificate
			want  error
		}{
			{"no certificate", nil, ErrInvalid},
			{"another CA", foreign.Certificates, ErrInvalid},
			{"leaf only from another CA", foreign.Certificates[:1], ErrInvalid},
			{"workload, not agent", workload.Certificates, ErrInvalid},
			{"revoked serial", revoked.Certificates, ErrDenied},
			{"quarantined ID", quarantined.Certificates, ErrDenied},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if id, err := env.a.VerifyAgent(tc.chain); !errors.Is(err, tc.want) {
					t.Fatalf("VerifyAgent = %v, %v; want %v", id, err, tc.want)
				}
			})
		}
		if id, err := env.a.VerifyAgent(good.Certificates); err != nil || id != good.ID {
			t.Fatalf("good agent: %v, %v", id, err)
		}
		env.clock.Advance(time.Hour + time.Minute)
		if _, err := env.a.VerifyAgent(good.Certificates); !errors.Is(err, ErrInvalid) {
			t.Fatalf("expired agent SVID: %v; want ErrInvalid", err)
		}
	})
}

func TestIsAgentID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.test")
	for path, want := range map[string]bool{
		"/agent/node-1": true, "/agent/": false, "/agent": false, "/agent/a/b": false, "/ns/agent/x": false, "/agents/x": false,
	} {
		id, err := spiffeid.FromPath(td, path)
		if err != nil {
			if want {
				t.Fatalf("%s: %v", path, err)
			}
			continue
		}
		if got := isAgentID(id); got != want {
			t.Errorf("isAgentID(%s) = %v; want %v", path, got, want)
		}
	}
}
