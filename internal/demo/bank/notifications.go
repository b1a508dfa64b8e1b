package bank

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
	"unicode"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// notifications is the notifications service: messages to customers, and
// statements built from the ledger.
type notifications struct {
	b  *Bank
	db *sql.DB
}

// Notification is a message to a customer.
type Notification struct {
	ID        string    `json:"id"`
	PaymentID string    `json:"payment_id,omitempty"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

func newNotifications(b *Bank) *notifications {
	return &notifications{b: b, db: b.dbs["notifications"]}
}

func (n *notifications) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/notify", n.notify)
	mux.HandleFunc("GET /v1/notifications", n.list)
	mux.HandleFunc("POST /v1/statements", n.statement)
	mux.HandleFunc("/", n.b.notFound("notifications"))
	return mux
}

func (m *notice) validate() error {
	switch {
	case m.User == "" || len(m.User) > 256:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "user must be 1 to 256 characters")
	case m.PaymentID != "" && !paymentIDPattern.MatchString(m.PaymentID):
		return errorf(http.StatusBadRequest, codeInvalidRequest, "payment_id is malformed")
	case m.Message == "" || len(m.Message) > 500:
		return errorf(http.StatusBadRequest, codeInvalidRequest, "message must be 1 to 500 characters")
	}
	for _, c := range m.Message {
		if !unicode.IsPrint(c) {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "message must be printable text")
		}
	}
	return nil
}

func (n *notifications) notify(w http.ResponseWriter, r *http.Request) {
	if p := identity(r).Peer; p != n.b.ids["payments"] {
		n.b.logger("notifications", r).Warn("notifications refused a caller", logKeyPeer, p.String())
		n.b.emit(r, event{service: "notifications", activity: 1, detail: "peer not allowed to send notifications",
			resource: audit.Resource{Type: "service", UID: n.b.ids["notifications"].String(), Name: "notifications"}})
		n.b.writeError(w, r, "notifications", errorf(http.StatusForbidden, codeForbidden, "this caller may not send notifications"))
		return
	}
	var m notice
	if err := decode(w, r, &m); err != nil {
		n.b.writeError(w, r, "notifications", err)
		return
	}
	if err := m.validate(); err != nil {
		n.b.writeError(w, r, "notifications", err)
		return
	}
	id, err := newID("ntf_")
	if err != nil {
		n.b.writeError(w, r, "notifications", fmt.Errorf("notification id: %w", err))
		return
	}
	if _, err := n.db.ExecContext(r.Context(), `INSERT INTO notifications (id, owner, payment_id, message, created_at) VALUES (?, ?, ?, ?, ?)`,
		id, m.User, m.PaymentID, m.Message, n.b.deps.Now().UnixMilli()); err != nil {
		n.b.writeError(w, r, "notifications", fmt.Errorf("store notification: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func (n *notifications) list(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		n.b.writeError(w, r, "notifications", err)
		return
	}
	rows, err := n.db.QueryContext(r.Context(), `SELECT id, payment_id, message, created_at FROM notifications
		WHERE owner = ? ORDER BY created_at DESC, id LIMIT 100`, user)
	if err != nil {
		n.b.writeError(w, r, "notifications", fmt.Errorf("list notifications: %w", err))
		return
	}
	defer rows.Close()
	out := []Notification{}
	for rows.Next() {
		var (
			m       Notification
			created int64
		)
		if err := rows.Scan(&m.ID, &m.PaymentID, &m.Message, &created); err != nil {
			n.b.writeError(w, r, "notifications", fmt.Errorf("read notification: %w", err))
			return
		}
		m.CreatedAt = time.UnixMilli(created).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		n.b.writeError(w, r, "notifications", fmt.Errorf("list notifications: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": out})
}

// statement builds the customer's statement from the ledger, through the
// agent. The bank's policy does not let notifications call the ledger, so
// in the demo this answers 502 and the agent's denial is in the audit trail.
func (n *notifications) statement(w http.ResponseWriter, r *http.Request) {
	user, err := customer(r)
	if err != nil {
		n.b.writeError(w, r, "notifications", err)
		return
	}
	account := AccountID(user)
	res, err := n.b.call(r.Context(), r, "notifications", http.MethodGet, "ledger", "/v1/entries?account="+url.QueryEscape(account), nil)
	var failure *apiError
	switch {
	case err != nil:
		failure = &apiError{Status: http.StatusBadGateway, Code: codeUpstream, Message: "ledger unavailable", Err: err}
	case res.Status == http.StatusForbidden:
		failure = errorf(http.StatusBadGateway, codeUpstream, "ledger refused the call (denied by policy)")
	case res.Status != http.StatusOK:
		failure = &apiError{Status: http.StatusBadGateway, Code: codeUpstream, Message: "ledger refused the call",
			Err: fmt.Errorf("ledger answered %d", res.Status)}
	}
	var st Statement
	if failure == nil {
		err := json.Unmarshal(res.Body, &st)
		if err == nil && st.Account != account {
			err = errors.New("statement of another account")
		}
		if err != nil {
			failure = &apiError{Status: http.StatusBadGateway, Code: codeUpstream, Message: "ledger sent an unreadable answer",
				Err: fmt.Errorf("decode ledger statement: %w", err)}
		}
	}
	ev := event{service: "notifications", activity: 1, ok: failure == nil, detail: "statement built",
		resource: audit.Resource{Type: "account", UID: account}}
	if failure != nil {
		ev.detail = "statement failed: " + failure.Message
	}
	n.b.emit(r, ev)
	if failure != nil {
		n.b.writeError(w, r, "notifications", failure)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
