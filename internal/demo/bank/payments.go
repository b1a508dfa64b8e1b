package bank

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"
	"unicode"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// HeaderIdempotencyKey makes a POST /v1/payments idempotent: the same key
// (per customer) with the same request answers what the first request got,
// without paying twice.
const HeaderIdempotencyKey = "Idempotency-Key"

var idempotencyKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// Payment statuses.
const (
	statusPending   = "pending"
	statusCompleted = "completed"
	statusFailed    = "failed"
)

// payments is the payments service.
type payments struct {
	b  *Bank
	db *sql.DB
}

// PaymentRequest is the body of POST /v1/payments.
type PaymentRequest struct {
	FromAccount string `json:"from_account"`
	ToIBAN      string `json:"to_iban"`
	// Amount is in minor units (cents), 1 to MaxPaymentAmount.
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Reference string `json:"reference"`
}

// Payment is a payment as the payments service shows it; the counterparty
// IBAN is masked to its last four characters.
type Payment struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"`
	FromAccount  string    `json:"from_account"`
	ToIBANMasked string    `json:"to_iban_masked"`
	Amount       int64     `json:"amount"`
	Currency     string    `json:"currency"`
	Reference    string    `json:"reference"`
	Failure      string    `json:"failure,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// notice is the body of the notifications service's POST /v1/notify.
type notice struct {
	User      string `json:"user"`
	PaymentID string `json:"payment_id,omitempty"`
	Message   string `json:"message"`
}

func newPayments(b *Bank) *payments { return &payments{b: b, db: b.dbs["payments"]} }

func (p *payments) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/payments", p.create)
	mux.HandleFunc("GET /v1/payments/{id}", p.get)
	mux.HandleFunc("/", p.b.notFound("payments"))
	return mux
}

func (req *PaymentRequest) validate(user string) error {
	switch {
	case !accountIDPattern.MatchString(req.FromAccount):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "from_account is malformed")
	case req.FromAccount != AccountID(user):
		// Another customer's account looks like one that does not exist.
		return errorf(http.StatusNotFound, codeNotFound, "account not found")
	case !validIBAN(req.ToIBAN):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "to_iban is not a valid IBAN (upper case, no spaces)")
	case req.ToIBAN == demoIBAN(user):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "to_iban is the paying account")
	case req.Amount < 1 || req.Amount > MaxPaymentAmount:
		return errorf(http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf("amount must be 1 to %d minor units", MaxPaymentAmount))
	case req.Currency != Currency:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "currency must be "+Currency)
	case len(req.Reference) > 140:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "reference must be at most 140 characters")
	}
	for _, c := range req.Reference {
		if !unicode.IsPrint(c) {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "reference must be printable text")
		}
	}
	return nil
}

func (p *payments) create(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	key := r.Header.Get(HeaderIdempotencyKey)
	if len(r.Header.Values(HeaderIdempotencyKey)) > 1 || (key != "" && !idempotencyKeyPattern.MatchString(key)) {
		p.b.writeError(w, r, "payments", errorf(http.StatusBadRequest, codeInvalidRequest,
			"Idempotency-Key must be one value of 1 to 64 characters [A-Za-z0-9_.:-]"))
		return
	}
	var req PaymentRequest
	if err := decode(w, r, &req); err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	if err := req.validate(user); err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	id, err := newID("pay_")
	if err != nil {
		p.b.writeError(w, r, "payments", fmt.Errorf("payment id: %w", err))
		return
	}
	hash := hashJSON(req)
	now := p.b.deps.Now().UnixMilli()
	var keyArg any
	if key != "" {
		keyArg = key
	}
	_, err = p.db.ExecContext(r.Context(), `INSERT INTO payments (id, owner, idempotency_key, request_hash, from_account, to_iban,
		amount, currency, reference, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, user, keyArg, hash, req.FromAccount, req.ToIBAN, req.Amount, req.Currency, req.Reference, statusPending, now, now)
	if err != nil {
		if key != "" && isUniqueViolation(err) {
			p.replay(w, r, user, key, hash)
			return
		}
		p.b.writeError(w, r, "payments", fmt.Errorf("insert payment: %w", err))
		return
	}
	pay := Payment{ID: id, Status: statusPending, FromAccount: req.FromAccount, ToIBANMasked: maskIBAN(req.ToIBAN),
		Amount: req.Amount, Currency: req.Currency, Reference: req.Reference, CreatedAt: time.UnixMilli(now).UTC()}
	status, failure := p.post(r, user, &pay)
	if failure != nil {
		pay.Status, pay.Failure = statusFailed, failure.Message
	} else {
		pay.Status = statusCompleted
	}
	// The outcome is recorded even if the caller has gone away.
	if _, err := p.db.ExecContext(contextWithoutCancel(r), `UPDATE payments SET status = ?, failure = ?, response_status = ?, updated_at = ?
		WHERE id = ?`, pay.Status, pay.Failure, status, p.b.deps.Now().UnixMilli(), id); err != nil {
		p.b.writeError(w, r, "payments", fmt.Errorf("record payment outcome: %w", err))
		return
	}
	ev := event{service: "payments", activity: 1, ok: failure == nil, detail: "payment created",
		resource: audit.Resource{Type: "payment", UID: id},
		unmapped: map[string]any{"from_account": pay.FromAccount, "to_iban": pay.ToIBANMasked, "amount": pay.Amount, "currency": pay.Currency}}
	if failure != nil {
		ev.detail = "payment failed: " + failure.Message
	}
	p.b.emit(r, ev)
	if failure != nil {
		failure.PaymentID = id
		p.b.writeError(w, r, "payments", failure)
		return
	}
	p.notify(r, user, &pay)
	w.Header().Set("Location", "/v1/payments/"+id)
	writeJSON(w, status, pay)
}

// post asks the ledger, through the agent, to post the payment. It returns
// the status to answer with and, when the payment failed, why.
func (p *payments) post(r *http.Request, user string, pay *Payment) (int, *apiError) {
	// The posting is not abandoned when the caller goes away: its outcome is
	// what the payment records (the call has its own timeout).
	res, err := p.b.call(contextWithoutCancel(r), r, "payments", http.MethodPost, "ledger", "/v1/entries", Posting{
		PaymentID: pay.ID, User: user, FromAccount: pay.FromAccount, Counterparty: pay.ToIBANMasked,
		Amount: pay.Amount, Currency: pay.Currency, Reference: pay.Reference,
	})
	switch {
	case err != nil:
		return http.StatusBadGateway, &apiError{Status: http.StatusBadGateway, Code: codeUpstream, Message: "ledger unavailable", Err: err}
	case res.Status == http.StatusCreated || res.Status == http.StatusOK:
		return http.StatusCreated, nil
	case res.Status == http.StatusUnprocessableEntity && upstreamCode(res.Body) == codeInsufficient:
		return http.StatusUnprocessableEntity, errorf(http.StatusUnprocessableEntity, codeInsufficient, "insufficient funds")
	case res.Status == http.StatusForbidden:
		return http.StatusBadGateway, errorf(http.StatusBadGateway, codeUpstream, "ledger refused the call (denied by policy)")
	default:
		return http.StatusBadGateway, &apiError{Status: http.StatusBadGateway, Code: codeUpstream, Message: "ledger refused the payment",
			Err: fmt.Errorf("ledger answered %d", res.Status)}
	}
}

// notify tells the customer about a completed payment. A failure is logged:
// the payment is done whether or not the message is stored.
func (p *payments) notify(r *http.Request, user string, pay *Payment) {
	msg := fmt.Sprintf("Payment of %s %s to %s completed", formatAmount(pay.Amount), pay.Currency, pay.ToIBANMasked)
	res, err := p.b.call(r.Context(), r, "payments", http.MethodPost, "notifications", "/v1/notify", notice{User: user, PaymentID: pay.ID, Message: msg})
	if err == nil && res.Status != http.StatusCreated {
		err = fmt.Errorf("notifications answered %d", res.Status)
	}
	if err != nil {
		p.b.logger("payments", r).Warn("payment notification not delivered", logKeyPayment, pay.ID, logKeyErr, err.Error())
	}
}

// replay answers a request whose Idempotency-Key the customer used before.
func (p *payments) replay(w http.ResponseWriter, r *http.Request, user, key, hash string) {
	row := p.db.QueryRowContext(r.Context(), `SELECT request_hash, response_status, `+paymentColumns+`
		FROM payments WHERE owner = ? AND idempotency_key = ?`, user, key)
	var (
		prevHash string
		status   int
	)
	pay, err := scanPayment(row, &prevHash, &status)
	if err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	switch {
	case prevHash != hash:
		p.b.writeError(w, r, "payments", errorf(http.StatusUnprocessableEntity, codeIdempotencyReuse,
			"Idempotency-Key was used with a different request"))
	case pay.Status == statusPending:
		p.b.writeError(w, r, "payments", errorf(http.StatusConflict, codeConflict,
			"a payment with this Idempotency-Key is in progress"))
	case pay.Status == statusFailed:
		e := errorf(status, codeUpstream, pay.Failure)
		if status == http.StatusUnprocessableEntity {
			e.Code = codeInsufficient
		}
		e.PaymentID = pay.ID
		w.Header().Set("Idempotent-Replayed", "true")
		p.b.writeError(w, r, "payments", e)
	default:
		w.Header().Set("Idempotent-Replayed", "true")
		w.Header().Set("Location", "/v1/payments/"+pay.ID)
		writeJSON(w, status, pay)
	}
}

func (p *payments) get(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	row := p.db.QueryRowContext(r.Context(), `SELECT `+paymentColumns+` FROM payments WHERE id = ? AND owner = ?`, r.PathValue("id"), user)
	pay, err := scanPayment(row)
	if errors.Is(err, sql.ErrNoRows) {
		p.b.writeError(w, r, "payments", errorf(http.StatusNotFound, codeNotFound, "payment not found"))
		return
	}
	if err != nil {
		p.b.writeError(w, r, "payments", err)
		return
	}
	writeJSON(w, http.StatusOK, pay)
}

const paymentColumns = `id, status, from_account, to_iban, amount, currency, reference, failure, created_at`

// scanPayment reads paymentColumns after the optional leading dest.
func scanPayment(s scanner, lead ...any) (Payment, error) {
	var (
		pay     Payment
		iban    string
		created int64
	)
	dest := append(lead, &pay.ID, &pay.Status, &pay.FromAccount, &iban, &pay.Amount, &pay.Currency, &pay.Reference, &pay.Failure, &created)
	if err := s.Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return pay, err
		}
		return pay, fmt.Errorf("read payment: %w", err)
	}
	pay.ToIBANMasked = maskIBAN(iban)
	pay.CreatedAt = time.UnixMilli(created).UTC()
	return pay, nil
}

// upstreamCode returns the code of a bank error body, or "".
func upstreamCode(body []byte) string {
	var e errorBody
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Code
}
