package bank

import (
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// accounts is the accounts service: a customer's accounts, opened on the
// first call.
type accounts struct {
	b  *Bank
	db *sql.DB
}

// Account is an account as the accounts service shows it.
type Account struct {
	ID             string    `json:"id"`
	IBAN           string    `json:"iban"`
	Name           string    `json:"name"`
	Currency       string    `json:"currency"`
	OpeningBalance int64     `json:"opening_balance"`
	CreatedAt      time.Time `json:"created_at"`
}

func newAccounts(b *Bank) *accounts { return &accounts{b: b, db: b.dbs["accounts"]} }

func (a *accounts) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/accounts", a.list)
	mux.HandleFunc("GET /v1/accounts/{id}", a.get)
	mux.HandleFunc("/", a.b.notFound("accounts"))
	return mux
}

func (a *accounts) list(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		a.b.writeError(w, r, "accounts", err)
		return
	}
	created, err := a.open(r, user)
	if err != nil {
		a.b.writeError(w, r, "accounts", err)
		return
	}
	if created {
		a.b.emit(r, event{service: "accounts", activity: 1, ok: true, detail: "account opened",
			resource: audit.Resource{Type: "account", UID: AccountID(user)}})
	}
	rows, err := a.db.QueryContext(r.Context(), `SELECT id, iban, name, currency, opening_balance, created_at
		FROM accounts WHERE owner = ? ORDER BY created_at, id LIMIT 100`, user)
	if err != nil {
		a.b.writeError(w, r, "accounts", fmt.Errorf("list accounts: %w", err))
		return
	}
	defer rows.Close()
	out := []Account{}
	for rows.Next() {
		acc, err := scanAccount(rows)
		if err != nil {
			a.b.writeError(w, r, "accounts", err)
			return
		}
		out = append(out, acc)
	}
	if err := rows.Err(); err != nil {
		a.b.writeError(w, r, "accounts", fmt.Errorf("list accounts: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

// open creates the customer's demo account if they have none yet and
// reports whether it did.
func (a *accounts) open(r *http.Request, user string) (bool, error) {
	res, err := a.db.ExecContext(r.Context(), `INSERT INTO accounts (id, owner, iban, name, currency, opening_balance, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		AccountID(user), user, demoIBAN(user), "Demo current account", Currency, OpeningBalance, a.b.deps.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("open demo account: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("open demo account: %w", err)
	}
	return n == 1, nil
}

func (a *accounts) get(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		a.b.writeError(w, r, "accounts", err)
		return
	}
	id := r.PathValue("id")
	// Another customer's account and an account that does not exist get
	// the same answer: no enumeration.
	row := a.db.QueryRowContext(r.Context(), `SELECT id, iban, name, currency, opening_balance, created_at
		FROM accounts WHERE id = ? AND owner = ?`, id, user)
	acc, err := scanAccount(row)
	if errors.Is(err, sql.ErrNoRows) {
		a.b.writeError(w, r, "accounts", errorf(http.StatusNotFound, codeNotFound, "account not found"))
		return
	}
	if err != nil {
		a.b.writeError(w, r, "accounts", err)
		return
	}
	writeJSON(w, http.StatusOK, acc)
}

type scanner interface{ Scan(dest ...any) error }

func scanAccount(s scanner) (Account, error) {
	var (
		acc     Account
		created int64
	)
	if err := s.Scan(&acc.ID, &acc.IBAN, &acc.Name, &acc.Currency, &acc.OpeningBalance, &created); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return acc, err
		}
		return acc, fmt.Errorf("read account: %w", err)
	}
	acc.CreatedAt = time.UnixMilli(created).UTC()
	return acc, nil
}

// notFound answers every path a service does not serve.
func (b *Bank) notFound(service string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b.writeError(w, r, service, errorf(http.StatusNotFound, codeNotFound, "no such resource"))
	}
}
