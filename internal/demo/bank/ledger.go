package bank

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Ledger accounts of the bank itself, the other side of the double entries.
const (
	equityAccount   = "bank:equity"
	clearingAccount = "bank:clearing"
)

var (
	paymentIDPattern = regexp.MustCompile(`^pay_[0-9a-f]{32}$`)
	maskedPattern    = regexp.MustCompile(`^\*{4}[A-Z0-9]{4}$`)
	accountIDPattern = regexp.MustCompile(`^acc_[0-9a-f]{24}$`)
)

// ledger is the ledger service: double-entry postings and balances.
type ledger struct {
	b  *Bank
	db *sql.DB
}

// Posting is what the payments service asks the ledger to post: the
// transfer of Amount from FromAccount to the counterparty (masked IBAN).
type Posting struct {
	PaymentID    string `json:"payment_id"`
	User         string `json:"user"`
	FromAccount  string `json:"from_account"`
	Counterparty string `json:"counterparty"`
	Amount       int64  `json:"amount"`
	Currency     string `json:"currency"`
	Reference    string `json:"reference"`
}

// Entry is one leg of a ledger transaction.
type Entry struct {
	ID          int64     `json:"id"`
	TxnID       string    `json:"txn_id"`
	Account     string    `json:"account"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

// Statement is an account's entries (newest first, at most 100) and its
// balance.
type Statement struct {
	Account  string  `json:"account"`
	Currency string  `json:"currency"`
	Balance  int64   `json:"balance"`
	Entries  []Entry `json:"entries"`
}

func newLedger(b *Bank) *ledger { return &ledger{b: b, db: b.dbs["ledger"]} }

func (l *ledger) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/entries", l.post)
	mux.HandleFunc("GET /v1/entries", l.list)
	mux.HandleFunc("/", l.b.notFound("ledger"))
	return mux
}

// allowPeer is the ledger's own check of the caller, behind the agent's
// Cedar decision (defense in depth): only the named bank services.
func (l *ledger) allowPeer(w http.ResponseWriter, r *http.Request, what string, names ...string) bool {
	p := identity(r).Peer
	for _, n := range names {
		if p == l.b.ids[n] {
			return true
		}
	}
	l.b.logger("ledger", r).Warn("ledger refused a caller", logKeyPeer, p.String())
	l.b.emit(r, event{service: "ledger", activity: activityFor(r.Method), detail: "peer not allowed to " + what,
		resource: audit.Resource{Type: "ledger", UID: l.b.ids["ledger"].String(), Name: "ledger"}})
	l.b.writeError(w, r, "ledger", errorf(http.StatusForbidden, codeForbidden, "this caller may not "+what))
	return false
}

func (p *Posting) validate() error {
	switch {
	case !paymentIDPattern.MatchString(p.PaymentID):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "payment_id is malformed")
	case p.User == "" || len(p.User) > 256:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "user must be 1 to 256 characters")
	case p.FromAccount != AccountID(p.User):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "from_account does not belong to user")
	case !maskedPattern.MatchString(p.Counterparty):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "counterparty must be a masked IBAN (****1234)")
	case p.Amount < 1 || p.Amount > MaxPaymentAmount:
		return errorf(http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf("amount must be 1 to %d minor units", MaxPaymentAmount))
	case p.Currency != Currency:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "currency must be "+Currency)
	case len(p.Reference) > 140:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "reference must be at most 140 characters")
	}
	return nil
}

func (l *ledger) post(w http.ResponseWriter, r *http.Request) {
	if !l.allowPeer(w, r, "post ledger entries", "payments") {
		return
	}
	var p Posting
	if err := decode(w, r, &p); err != nil {
		l.b.writeError(w, r, "ledger", err)
		return
	}
	if err := p.validate(); err != nil {
		l.b.writeError(w, r, "ledger", err)
		return
	}
	hash := hashJSON(p)
	now := l.b.deps.Now().UnixMilli()
	var (
		balance int64
		created bool
	)
	err := inTx(r.Context(), l.db, func(tx *sql.Tx) error {
		var existing string
		err := tx.QueryRowContext(r.Context(), `SELECT request_hash FROM transactions WHERE id = ?`, p.PaymentID).Scan(&existing)
		switch {
		case err == nil && existing == hash:
			// The same posting again (a retry): already done, nothing posted twice.
			balance, err = accountBalance(r.Context(), tx, p.FromAccount)
			return err
		case err == nil:
			return errorf(http.StatusConflict, codeConflict, "payment_id was posted with different details")
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up transaction: %w", err)
		}
		if err := openLedgerAccount(r.Context(), tx, p.FromAccount, now); err != nil {
			return err
		}
		if balance, err = accountBalance(r.Context(), tx, p.FromAccount); err != nil {
			return err
		}
		if balance < p.Amount {
			return errorf(http.StatusUnprocessableEntity, codeInsufficient, "insufficient funds")
		}
		if _, err := tx.ExecContext(r.Context(), `INSERT INTO transactions (id, owner, request_hash, created_at) VALUES (?, ?, ?, ?)`,
			p.PaymentID, p.User, hash, now); err != nil {
			return fmt.Errorf("insert transaction: %w", err)
		}
		desc := "payment to " + p.Counterparty
		if p.Reference != "" {
			desc += ": " + p.Reference
		}
		for _, leg := range []struct {
			account string
			amount  int64
		}{{p.FromAccount, -p.Amount}, {clearingAccount, p.Amount}} {
			if _, err := tx.ExecContext(r.Context(), `INSERT INTO entries (txn_id, account, amount, currency, description, created_at)
				VALUES (?, ?, ?, ?, ?, ?)`, p.PaymentID, leg.account, leg.amount, p.Currency, desc, now); err != nil {
				return fmt.Errorf("insert entry: %w", err)
			}
		}
		balance -= p.Amount
		created = true
		return nil
	})
	if err != nil {
		l.b.writeError(w, r, "ledger", err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		l.b.emit(r, event{service: "ledger", activity: 1, ok: true, detail: "ledger entry posted",
			resource: audit.Resource{Type: "ledger_transaction", UID: p.PaymentID},
			unmapped: map[string]any{"account": p.FromAccount, "amount": p.Amount, "currency": p.Currency, "counterparty": p.Counterparty}})
	}
	writeJSON(w, status, map[string]any{"txn_id": p.PaymentID, "account": p.FromAccount, "balance": balance})
}

// openLedgerAccount posts the opening balance of a customer's demo account
// the first time the ledger sees it.
func openLedgerAccount(ctx context.Context, tx *sql.Tx, account string, now int64) error {
	txn := "open:" + account
	for _, leg := range []struct {
		account string
		amount  int64
	}{{account, OpeningBalance}, {equityAccount, -OpeningBalance}} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO entries (txn_id, account, amount, currency, description, created_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (txn_id, account) DO NOTHING`,
			txn, leg.account, leg.amount, Currency, "opening balance", now); err != nil {
			return fmt.Errorf("open ledger account: %w", err)
		}
	}
	return nil
}

func accountBalance(ctx context.Context, tx *sql.Tx, account string) (int64, error) {
	var balance int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM entries WHERE account = ?`, account).Scan(&balance); err != nil {
		return 0, fmt.Errorf("compute balance: %w", err)
	}
	return balance, nil
}

func (l *ledger) list(w http.ResponseWriter, r *http.Request) {
	if !l.allowPeer(w, r, "read ledger entries", "gateway", "accounts") {
		return
	}
	user, err := customer(r)
	if err != nil {
		l.b.writeError(w, r, "ledger", err)
		return
	}
	account := r.URL.Query().Get("account")
	if account == "" {
		account = AccountID(user)
	}
	if !accountIDPattern.MatchString(account) || account != AccountID(user) {
		l.b.writeError(w, r, "ledger", errorf(http.StatusNotFound, codeNotFound, "account not found"))
		return
	}
	st := Statement{Account: account, Currency: Currency, Entries: []Entry{}}
	err = inTx(r.Context(), l.db, func(tx *sql.Tx) error {
		if err := openLedgerAccount(r.Context(), tx, account, l.b.deps.Now().UnixMilli()); err != nil {
			return err
		}
		var err error
		if st.Balance, err = accountBalance(r.Context(), tx, account); err != nil {
			return err
		}
		rows, err := tx.QueryContext(r.Context(), `SELECT id, txn_id, account, amount, currency, description, created_at
			FROM entries WHERE account = ? ORDER BY id DESC LIMIT 100`, account)
		if err != nil {
			return fmt.Errorf("list entries: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				e       Entry
				created int64
			)
			if err := rows.Scan(&e.ID, &e.TxnID, &e.Account, &e.Amount, &e.Currency, &e.Description, &created); err != nil {
				return fmt.Errorf("read entry: %w", err)
			}
			e.CreatedAt = time.UnixMilli(created).UTC()
			st.Entries = append(st.Entries, e)
		}
		return rows.Err()
	})
	if err != nil {
		l.b.writeError(w, r, "ledger", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
