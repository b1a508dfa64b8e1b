package bank

import (
	"net/http"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// TestLedgerChecksItsCallers: behind the agent's Cedar decision the ledger
// checks the verified peer itself (defense in depth): only payments posts,
// only the gateway and accounts read, and a customer reads only their own
// account.
func TestLedgerChecksItsCallers(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	posting := Posting{PaymentID: "pay_" + strings.Repeat("ab", 16), User: "alice", FromAccount: AccountID("alice"),
		Counterparty: "****3000", Amount: 1200, Currency: "EUR", Reference: "books"}
	tests := []struct {
		name       string
		c          call
		wantStatus int
	}{
		{"the gateway cannot post", call{method: http.MethodPost, path: "/v1/entries", peer: "gateway", user: "alice", body: posting}, http.StatusForbidden},
		{"notifications cannot post", call{method: http.MethodPost, path: "/v1/entries", peer: "notifications", body: posting}, http.StatusForbidden},
		{"a workload of another trust domain cannot post", call{method: http.MethodPost, path: "/v1/entries", peer: "spiffe://evil.example/ns/bank/sa/payments", body: posting}, http.StatusForbidden},
		{"payments posts", call{method: http.MethodPost, path: "/v1/entries", peer: "payments", body: posting}, http.StatusCreated},
		{"the same posting again is not posted twice", call{method: http.MethodPost, path: "/v1/entries", peer: "payments", body: posting}, http.StatusOK},
		{"the same payment id with other details", call{method: http.MethodPost, path: "/v1/entries", peer: "payments",
			body: Posting{PaymentID: posting.PaymentID, User: "alice", FromAccount: AccountID("alice"), Counterparty: "****3000", Amount: 99, Currency: "EUR"}}, http.StatusConflict},
		{"a posting from another customer's account", call{method: http.MethodPost, path: "/v1/entries", peer: "payments",
			body: Posting{PaymentID: "pay_" + strings.Repeat("cd", 16), User: "alice", FromAccount: AccountID("bob"), Counterparty: "****3000", Amount: 1, Currency: "EUR"}}, http.StatusBadRequest},
		{"a posting with a full IBAN as counterparty", call{method: http.MethodPost, path: "/v1/entries", peer: "payments",
			body: Posting{PaymentID: "pay_" + strings.Repeat("ef", 16), User: "alice", FromAccount: AccountID("alice"), Counterparty: bobIBAN, Amount: 1, Currency: "EUR"}}, http.StatusBadRequest},
		{"the gateway reads the customer's entries", call{method: http.MethodGet, path: "/v1/entries?account=" + AccountID("alice"), peer: "gateway", user: "alice"}, http.StatusOK},
		{"accounts reads the customer's entries", call{method: http.MethodGet, path: "/v1/entries", peer: "accounts", user: "alice"}, http.StatusOK},
		{"notifications cannot read entries", call{method: http.MethodGet, path: "/v1/entries", peer: "notifications", user: "alice"}, http.StatusForbidden},
		{"another customer's entries look absent", call{method: http.MethodGet, path: "/v1/entries?account=" + AccountID("bob"), peer: "gateway", user: "alice"}, http.StatusNotFound},
		{"reading entries needs a customer", call{method: http.MethodGet, path: "/v1/entries", peer: "gateway"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.service = "ledger"
			if a := env.do(t, tt.c); a.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", a.status, tt.wantStatus, a.body)
			}
		})
	}
	st := env.statement(t, "alice")
	if st.Balance != OpeningBalance-1200 || st.postings(posting.PaymentID) != 1 {
		t.Errorf("statement %+v, want one posting of 1200", st)
	}
	// Double entry: every transaction sums to zero over all accounts.
	var sum int64
	if err := env.bank.dbs["ledger"].QueryRow(`SELECT COALESCE(SUM(amount), 0) FROM entries`).Scan(&sum); err != nil || sum != 0 {
		t.Errorf("entries sum to %d (%v), want 0", sum, err)
	}
	refused := env.rec.eventsWhere(func(e *audit.Event) bool {
		return e.StatusID == audit.StatusFailure && strings.HasPrefix(e.StatusDetail, "peer not allowed")
	})
	if len(refused) != 4 {
		t.Errorf("%d refusal events, want 4 (three postings, one read): %+v", len(refused), refused)
	}
}
