package bank

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
)

const (
	bobIBAN   = "DE89370400440532013000"
	traceHdr  = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	traceID32 = "0af7651916cd43dd8448eb211c80319c"
)

func payment(user string, amount int64) map[string]any {
	return map[string]any{"from_account": AccountID(user), "to_iban": bobIBAN, "amount": amount, "currency": "EUR", "reference": "rent"}
}

func (env *testEnv) pay(t *testing.T, user string, body any, headers map[string]string) answer {
	t.Helper()
	return env.do(t, call{service: "payments", method: http.MethodPost, path: "/v1/payments", user: user, body: body, headers: headers})
}

func (env *testEnv) statement(t *testing.T, user string) Statement {
	t.Helper()
	a := env.do(t, call{service: "ledger", method: http.MethodGet, path: "/v1/entries?account=" + AccountID(user), user: user})
	if a.status != http.StatusOK {
		t.Fatalf("ledger entries: %d %s", a.status, a.body)
	}
	var st Statement
	a.json(t, &st)
	return st
}

// postings counts the ledger transactions of a payment.
func (st Statement) postings(paymentID string) int {
	n := 0
	for _, e := range st.Entries {
		if e.TxnID == paymentID {
			n++
		}
	}
	return n
}

// TestPaymentFlow: a payment goes payments → ledger → notifications through
// the agent, with one correlation id and one trace, and shows up in the
// ledger and the customer's notifications; no full IBAN in any event.
func TestPaymentFlow(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	a := env.pay(t, "alice", payment("alice", 2550), map[string]string{
		correlation.HeaderRequestID: "flow-1", correlation.HeaderTraceparent: traceHdr})
	if a.status != http.StatusCreated {
		t.Fatalf("payment: %d %s", a.status, a.body)
	}
	var pay Payment
	a.json(t, &pay)
	if pay.Status != statusCompleted || pay.ToIBANMasked != "****3000" || pay.Amount != 2550 || a.header.Get("Location") != "/v1/payments/"+pay.ID {
		t.Errorf("payment %+v, Location %q", pay, a.header.Get("Location"))
	}
	if strings.Contains(string(a.body), bobIBAN) {
		t.Errorf("the answer holds the full IBAN: %s", a.body)
	}

	// The ledger and the notifications were called through the agent with
	// the request's correlation id and trace.
	agent := env.agents["payments"]
	for _, to := range []string{"ledger", "notifications"} {
		calls := agent.callsTo(to, http.MethodPost)
		if len(calls) != 1 || calls[0].requestID != "flow-1" || calls[0].traceparent != traceHdr || calls[0].status != http.StatusCreated {
			t.Errorf("calls to %s: %+v", to, calls)
		}
	}

	st := env.statement(t, "alice")
	if st.Balance != OpeningBalance-2550 || st.postings(pay.ID) != 1 {
		t.Errorf("statement %+v, want balance %d and one posting of %s", st, OpeningBalance-2550, pay.ID)
	}

	var notes struct{ Notifications []Notification }
	env.do(t, call{service: "notifications", method: http.MethodGet, path: "/v1/notifications", user: "alice"}).json(t, &notes)
	if len(notes.Notifications) != 1 || notes.Notifications[0].PaymentID != pay.ID ||
		notes.Notifications[0].Message != "Payment of 25.50 EUR to ****3000 completed" {
		t.Errorf("notifications %+v", notes)
	}
	var others struct{ Notifications []Notification }
	env.do(t, call{service: "notifications", method: http.MethodGet, path: "/v1/notifications", user: "bob"}).json(t, &others)
	if len(others.Notifications) != 0 {
		t.Errorf("bob sees alice's notifications: %+v", others)
	}

	// GET the payment: its owner only.
	got := env.do(t, call{service: "payments", method: http.MethodGet, path: "/v1/payments/" + pay.ID, user: "alice"})
	var again Payment
	got.json(t, &again)
	if got.status != http.StatusOK || again != pay {
		t.Errorf("GET payment: %d %+v, want %+v", got.status, again, pay)
	}
	if a := env.do(t, call{service: "payments", method: http.MethodGet, path: "/v1/payments/" + pay.ID, user: "bob"}); a.status != http.StatusNotFound {
		t.Errorf("bob GET alice's payment: %d, want 404", a.status)
	}

	// The audit trail has the chain under one correlation id and trace.
	chain := env.rec.eventsWhere(func(e *audit.Event) bool { return e.Metadata.CorrelationUID == "flow-1" })
	details := map[string]*audit.Event{}
	for _, e := range chain {
		details[e.StatusDetail] = e
		if e.Metadata.TraceUID != traceID32 {
			t.Errorf("event %q trace %q, want %q", e.StatusDetail, e.Metadata.TraceUID, traceID32)
		}
		raw, _ := json.Marshal(e)
		if strings.Contains(string(raw), bobIBAN) || strings.Contains(string(raw), "37040044053201") {
			t.Errorf("event holds the full IBAN: %s", raw)
		}
	}
	created, posted := details["payment created"], details["ledger entry posted"]
	if created == nil || posted == nil {
		t.Fatalf("events of the payment: %+v", chain)
	}
	if created.StatusID != audit.StatusSuccess || created.Actor.User.UID != "alice" || created.Resources[0].UID != pay.ID {
		t.Errorf("payment created event %+v", created)
	}
	if posted.Actor.AppUID != id(t, "payments").String() || posted.Resources[0].UID != pay.ID {
		t.Errorf("ledger entry posted event %+v, want the payments service as actor", posted)
	}
}

func TestPaymentValidation(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	with := func(k string, v any) map[string]any {
		p := payment("alice", 100)
		if v == nil {
			delete(p, k)
		} else {
			p[k] = v
		}
		return p
	}
	tests := []struct {
		name       string
		body       any
		headers    map[string]string
		user       string
		wantStatus int
		wantMsg    string
	}{
		{"zero amount", with("amount", 0), nil, "alice", 400, "amount must be 1 to"},
		{"negative amount", with("amount", -5), nil, "alice", 400, "amount must be 1 to"},
		{"amount over the limit", with("amount", MaxPaymentAmount+1), nil, "alice", 400, "amount must be 1 to"},
		{"fractional amount", `{"from_account":"` + AccountID("alice") + `","to_iban":"` + bobIBAN + `","amount":1.5,"currency":"EUR"}`, nil, "alice", 400, `field "amount"`},
		{"another currency", with("currency", "USD"), nil, "alice", 400, "currency must be EUR"},
		{"IBAN with bad check digits", with("to_iban", "DE00370400440532013000"), nil, "alice", 400, "not a valid IBAN"},
		{"IBAN with an injection", with("to_iban", "DE89' OR 1=1--"), nil, "alice", 400, "not a valid IBAN"},
		{"paying oneself", with("to_iban", demoIBAN("alice")), nil, "alice", 400, "paying account"},
		{"reference too long", with("reference", strings.Repeat("x", 141)), nil, "alice", 400, "at most 140"},
		{"reference with a control character", with("reference", "a\x00b"), nil, "alice", 400, "printable"},
		{"unknown field", with("priority", "urgent"), nil, "alice", 400, "unknown field"},
		{"malformed from_account", with("from_account", "acc_1"), nil, "alice", 400, "from_account is malformed"},
		{"another customer's account", with("from_account", AccountID("bob")), nil, "alice", 404, "account not found"},
		{"no customer", payment("alice", 100), nil, "", 403, "signed-in customer"},
		{"bad idempotency key", payment("alice", 100), map[string]string{HeaderIdempotencyKey: "a b"}, "alice", 400, "Idempotency-Key"},
		{"not JSON", "amount=5", nil, "alice", 400, "malformed JSON"},
		{"body over the limit", `{"reference":"` + strings.Repeat("x", maxBodyBytes) + `"}`, nil, "alice", 413, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := env.pay(t, tt.user, tt.body, tt.headers)
			if a.status != tt.wantStatus || !strings.Contains(a.errorMessage(t), tt.wantMsg) {
				t.Errorf("got %d %s, want %d %q", a.status, a.body, tt.wantStatus, tt.wantMsg)
			}
		})
	}
	t.Cleanup(func() {
		if calls := env.agents["payments"].callsTo("ledger", http.MethodPost); len(calls) != 0 {
			t.Errorf("an invalid payment reached the ledger: %+v", calls)
		}
	})
}

func TestPaymentIdempotency(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	key := map[string]string{HeaderIdempotencyKey: "order-42"}
	first := env.pay(t, "alice", payment("alice", 1000), key)
	second := env.pay(t, "alice", payment("alice", 1000), key)
	if first.status != http.StatusCreated || second.status != http.StatusCreated {
		t.Fatalf("statuses %d, %d: %s %s", first.status, second.status, first.body, second.body)
	}
	var p1, p2 Payment
	first.json(t, &p1)
	second.json(t, &p2)
	if p1 != p2 || second.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay %+v (replayed %q), want %+v", p2, second.header.Get("Idempotent-Replayed"), p1)
	}
	if calls := env.agents["payments"].callsTo("ledger", http.MethodPost); len(calls) != 1 {
		t.Errorf("%d ledger postings, want 1", len(calls))
	}
	if st := env.statement(t, "alice"); st.Balance != OpeningBalance-1000 {
		t.Errorf("balance %d, want %d: paid twice?", st.Balance, OpeningBalance-1000)
	}

	// The same key with another request is refused; another customer's
	// same key is theirs.
	if a := env.pay(t, "alice", payment("alice", 2000), key); a.status != http.StatusUnprocessableEntity || !strings.Contains(a.errorMessage(t), "different request") {
		t.Errorf("key reuse: %d %s", a.status, a.body)
	}
	if a := env.pay(t, "bob", payment("bob", 1000), key); a.status != http.StatusCreated {
		t.Errorf("bob with the same key: %d %s", a.status, a.body)
	}
	// Without a key, every request is a new payment.
	env.pay(t, "carol", payment("carol", 10), nil)
	env.pay(t, "carol", payment("carol", 10), nil)
	if st := env.statement(t, "carol"); st.Balance != OpeningBalance-20 {
		t.Errorf("carol's balance %d, want %d", st.Balance, OpeningBalance-20)
	}
}

// TestPaymentLedgerFailures: when the ledger refuses or cannot be reached the
// payment is marked failed, the caller gets a 502 without internal detail,
// nothing is posted, and a retry with the same key posts nothing either.
func TestPaymentLedgerFailures(t *testing.T) {
	t.Parallel()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name    string
		opts    envOptions
		down    bool
		wantMsg string
	}{
		{"ledger down behind the agent", envOptions{}, true, "ledger refused the payment"},
		{"agent unreachable", envOptions{outbound: map[string]string{"payments": deadURL}}, false, "ledger unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newEnv(t, tt.opts)
			agent := env.agents["payments"]
			agent.setDown("ledger", tt.down)
			key := map[string]string{HeaderIdempotencyKey: "retry-me"}
			a := env.pay(t, "alice", payment("alice", 700), key)
			if a.status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502: %s", a.status, a.body)
			}
			var e errorBody
			a.json(t, &e)
			if e.Error != tt.wantMsg || e.Code != codeUpstream || e.PaymentID == "" || strings.Contains(string(a.body), "127.0.0.1") {
				t.Errorf("error %s", a.body)
			}
			got := env.do(t, call{service: "payments", method: http.MethodGet, path: "/v1/payments/" + e.PaymentID, user: "alice"})
			var pay Payment
			got.json(t, &pay)
			if pay.Status != statusFailed || pay.Failure != tt.wantMsg {
				t.Errorf("payment after the failure: %+v", pay)
			}
			failed := env.rec.eventsWhere(func(ev *audit.Event) bool { return ev.StatusDetail == "payment failed: "+tt.wantMsg })
			if len(failed) != 1 || failed[0].StatusID != audit.StatusFailure {
				t.Errorf("payment failed events %+v", failed)
			}

			// The ledger is back: the retry answers the recorded failure and
			// posts nothing; the balance is untouched.
			agent.setDown("ledger", false)
			retry := env.pay(t, "alice", payment("alice", 700), key)
			if retry.status != http.StatusBadGateway || retry.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry: %d %s", retry.status, retry.body)
			}
			if st := env.statement(t, "alice"); st.Balance != OpeningBalance || st.postings(e.PaymentID) != 0 {
				t.Errorf("statement after the failure %+v", st)
			}
			if n := len(agent.callsTo("notifications", http.MethodPost)); n != 0 {
				t.Errorf("a failed payment was notified %d times", n)
			}
		})
	}
}

func TestPaymentInsufficientFunds(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	a := env.pay(t, "alice", payment("alice", OpeningBalance+1), nil)
	if a.status != http.StatusUnprocessableEntity || a.errorMessage(t) != "insufficient funds" {
		t.Fatalf("got %d %s, want 422 insufficient funds", a.status, a.body)
	}
	if a := env.pay(t, "alice", payment("alice", OpeningBalance), nil); a.status != http.StatusCreated {
		t.Fatalf("paying the whole balance: %d %s", a.status, a.body)
	}
	if st := env.statement(t, "alice"); st.Balance != 0 {
		t.Errorf("balance %d, want 0", st.Balance)
	}
}

// TestPaymentIdempotencyConcurrent: requests racing with one key pay once;
// each gets the payment or a 409 while it is in progress.
func TestPaymentIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	const n = 8
	answers := make(chan answer, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := env.send(t.Name(), call{service: "payments", method: http.MethodPost, path: "/v1/payments", user: "alice",
				body: payment("alice", 500), headers: map[string]string{HeaderIdempotencyKey: "race"}})
			if err != nil {
				errs <- err
				return
			}
			answers <- a
		}()
	}
	wg.Wait()
	close(answers)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for a := range answers {
		switch a.status {
		case http.StatusCreated:
			var p Payment
			a.json(t, &p)
			ids[p.ID] = true
		case http.StatusConflict:
		default:
			t.Errorf("answer %d %s", a.status, a.body)
		}
	}
	if len(ids) != 1 {
		t.Errorf("payments %v, want exactly one", ids)
	}
	if st := env.statement(t, "alice"); st.Balance != OpeningBalance-500 {
		t.Errorf("balance %d, want %d", st.Balance, OpeningBalance-500)
	}
	if calls := env.agents["payments"].callsTo("ledger", http.MethodPost); len(calls) != 1 {
		t.Errorf("%d ledger postings, want 1", len(calls))
	}
}
