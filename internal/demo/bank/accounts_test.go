package bank

import (
	"net/http"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
)

func TestAccounts(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})

	// A new customer gets one demo account on the first call, and the same
	// one afterwards.
	var first, second struct{ Accounts []Account }
	env.do(t, call{service: "accounts", method: http.MethodGet, path: "/v1/accounts", user: "alice"}).json(t, &first)
	env.do(t, call{service: "accounts", method: http.MethodGet, path: "/v1/accounts", user: "alice"}).json(t, &second)
	if len(first.Accounts) != 1 || len(second.Accounts) != 1 || first.Accounts[0].ID != second.Accounts[0].ID {
		t.Fatalf("accounts %+v then %+v, want the same single account", first, second)
	}
	acc := first.Accounts[0]
	if acc.ID != AccountID("alice") || acc.OpeningBalance != OpeningBalance || acc.Currency != Currency || !validIBAN(acc.IBAN) {
		t.Errorf("account %+v", acc)
	}
	opened := env.rec.eventsWhere(func(e *audit.Event) bool { return e.StatusDetail == "account opened" })
	if len(opened) != 1 || opened[0].Actor == nil || opened[0].Actor.User.UID != "alice" || opened[0].ClassUID != 6003 ||
		opened[0].Metadata.CorrelationUID != "req-TestAccounts" {
		t.Errorf("account opened events %+v, want one for alice with the request id", opened)
	}
	env.do(t, call{service: "accounts", method: http.MethodGet, path: "/v1/accounts", user: "bob"})
	bobs := AccountID("bob")

	tests := []struct {
		name       string
		c          call
		wantStatus int
	}{
		{"own account", call{path: "/v1/accounts/" + acc.ID, user: "alice"}, http.StatusOK},
		{"another customer's account looks absent", call{path: "/v1/accounts/" + bobs, user: "alice"}, http.StatusNotFound},
		{"an account that does not exist", call{path: "/v1/accounts/acc_000000000000000000000000", user: "alice"}, http.StatusNotFound},
		{"a malformed id", call{path: "/v1/accounts/..%2f..%2fetc", user: "alice"}, http.StatusNotFound},
		{"a service call without a customer", call{path: "/v1/accounts", peer: "payments"}, http.StatusForbidden},
		{"an unknown path", call{path: "/v1/admin", user: "alice"}, http.StatusNotFound},
		{"a write to a read-only API", call{method: http.MethodPost, path: "/v1/accounts", user: "alice", body: map[string]any{}}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.service = "accounts"
			if tt.c.method == "" {
				tt.c.method = http.MethodGet
			}
			a := env.do(t, tt.c)
			if a.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", a.status, tt.wantStatus, a.body)
			}
			if a.status == http.StatusOK && tt.c.path != "/v1/accounts" {
				var got Account
				a.json(t, &got)
				if got != acc {
					t.Errorf("account %+v, want %+v", got, acc)
				}
			}
			if a.status == http.StatusNotFound && a.errorMessage(t) == "" {
				t.Errorf("404 without an error message: %s", a.body)
			}
		})
	}
}

func TestIBANs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		iban string
		ok   bool
	}{
		{"DE89370400440532013000", true},
		{"GB82WEST12345698765432", true},
		{"FR1420041010050500013M02606", true},
		{"DE89370400440532013001", false}, // check digits do not match
		{"de89370400440532013000", false}, // lower case
		{"DE89 3704 0044 0532 0130 00", false},
		{"DE8937040044", false},
		{"", false},
		{"XX00" + "A1B2C3D4E5F6G7H8I9J0K1L2M3N4O5P6", false}, // too long
	}
	for _, tt := range tests {
		if got := validIBAN(tt.iban); got != tt.ok {
			t.Errorf("validIBAN(%q) = %v, want %v", tt.iban, got, tt.ok)
		}
	}
	for _, user := range []string{"alice", "bob", "a-very-long-subject-0123456789"} {
		if iban := demoIBAN(user); !validIBAN(iban) || len(iban) != 22 {
			t.Errorf("demoIBAN(%q) = %q, not a valid German IBAN", user, iban)
		}
	}
	if got := maskIBAN("DE89370400440532013000"); got != "****3000" {
		t.Errorf("maskIBAN = %q", got)
	}
}
