package identity

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pquerna/otp"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// userAdminDo calls the user admin API.
func userAdminDo(t *testing.T, env *testEnv, method, path, contentType, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, env.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := env.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestUserAdminAPI(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db)
		do := func(method, path, body string) (int, []byte) {
			t.Helper()
			ct := ""
			if body != "" {
				ct = "application/json"
			}
			return userAdminDo(t, env, method, path, ct, body)
		}
		user := func(b []byte) User {
			t.Helper()
			var u User
			if err := json.Unmarshal(b, &u); err != nil {
				t.Fatalf("decode user %s: %v", b, err)
			}
			return u
		}

		status, b := do("POST", PathAdminUsers, `{"username":"Alice","password":"`+frontPassword+`","email":"alice@example.com","name":"Alice"}`)
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, b)
		}
		if strings.Contains(string(b), "argon2") || strings.Contains(string(b), frontPassword) || strings.Contains(string(b), "password") {
			t.Errorf("create answer holds the password or its hash: %s", b)
		}
		alice := user(b)
		if alice.Username != "alice" || alice.ID == "" {
			t.Fatalf("created %+v", alice)
		}
		item := PathAdminUsers + "/" + alice.ID

		if status, b = do("GET", PathAdminUsers, ""); status != http.StatusOK || !strings.Contains(string(b), alice.ID) || strings.Contains(string(b), "argon2") {
			t.Errorf("list: %d %s", status, b)
		}
		for _, path := range []string{item, PathAdminUsers + "/alice"} {
			if status, b = do("GET", path, ""); status != http.StatusOK || user(b).ID != alice.ID {
				t.Errorf("get %s: %d %s", path, status, b)
			}
		}
		if status, b = do("POST", item+"/password", `{"password":"another long passphrase"}`); status != http.StatusNoContent {
			t.Errorf("set password: %d %s", status, b)
		}
		status, b = do("POST", item+"/totp", "")
		var enr TOTPEnrollment
		if status != http.StatusOK || json.Unmarshal(b, &enr) != nil {
			t.Fatalf("enroll TOTP: %d %s", status, b)
		}
		key, err := otp.NewKeyFromURL(enr.OTPAuthURL)
		if err != nil || key.Type() != "totp" || key.AccountName() != "alice" || key.Secret() == "" {
			t.Fatalf("otpauth URL %q: %v", enr.OTPAuthURL, err)
		}
		if status, b = do("GET", item, ""); status != http.StatusOK || !user(b).TOTP || strings.Contains(string(b), key.Secret()) {
			t.Errorf("after enrollment: %d %s", status, b)
		}
		for _, tc := range []struct {
			action string
			check  func(User) bool
		}{
			{"/disable", func(u User) bool { return u.Disabled }},
			{"/enable", func(u User) bool { return !u.Disabled }},
			{"/unlock", func(u User) bool { return u.LockedUntil.IsZero() }},
		} {
			if status, b = do("POST", item+tc.action, ""); status != http.StatusOK || !tc.check(user(b)) {
				t.Errorf("%s: %d %s", tc.action, status, b)
			}
		}
		if status, b = do("DELETE", item+"/totp", ""); status != http.StatusOK || user(b).TOTP {
			t.Errorf("remove TOTP: %d %s", status, b)
		}
		if status, b = do("DELETE", item, ""); status != http.StatusNoContent {
			t.Errorf("delete: %d %s", status, b)
		}
		if status, _ = do("GET", item, ""); status != http.StatusNotFound {
			t.Errorf("get after delete: %d", status)
		}

		for act, n := range map[int]int{actCreate: 1, actPasswordChange: 1, actMFAEnable: 1, actMFADisable: 1,
			actAccountDisable: 1, actAccountEnable: 2, actAccountDelete: 1} {
			if got := env.countEvents(classAccountChange, act, audit.StatusSuccess); got != n {
				t.Errorf("%d account change events of activity %d, want %d", got, act, n)
			}
		}
		for _, e := range env.auditEvents() {
			if e.ClassUID == classAccountChange && (e.Actor == nil || e.Actor.User == nil || e.Actor.User.UID == "") {
				t.Errorf("admin change without the admin as actor: %+v", e)
			}
		}
		raw, _ := json.Marshal(env.auditEvents())
		if strings.Contains(string(raw), frontPassword) || strings.Contains(string(raw), "another long") || strings.Contains(string(raw), key.Secret()) {
			t.Error("the audit log holds a password or TOTP secret")
		}
	})
}

func TestUserAdminRefusesBadInput(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db)
		if _, err := env.srv.CreateUser(t.Context(), NewUser{Username: "taken", Password: frontPassword}); err != nil {
			t.Fatal(err)
		}
		before := len(env.auditEvents())
		for _, tc := range []struct {
			name, method, path, contentType, body string
			status                                int
			code                                  string
		}{
			{"unknown field", "POST", PathAdminUsers, "application/json", `{"username":"bob","password":"` + frontPassword + `","admin":true}`, 400, httpapi.CodeInvalidJSON},
			{"trailing data", "POST", PathAdminUsers, "application/json", `{"username":"bob","password":"` + frontPassword + `"} {}`, 400, httpapi.CodeInvalidJSON},
			{"not JSON", "POST", PathAdminUsers, "text/plain", `username=bob`, 415, httpapi.CodeUnsupportedType},
			{"too large", "POST", PathAdminUsers, "application/json", `{"username":"bob","password":"` + strings.Repeat("a", maxUserBody) + `"}`, 413, httpapi.CodeTooLarge},
			{"short password", "POST", PathAdminUsers, "application/json", `{"username":"bob","password":"short"}`, 400, CodeInvalidUser},
			{"password is the username", "POST", PathAdminUsers, "application/json", `{"username":"bobthebuilder","password":"bobthebuilder"}`, 400, CodeInvalidUser},
			{"bad username", "POST", PathAdminUsers, "application/json", `{"username":"<b>","password":"` + frontPassword + `"}`, 400, CodeInvalidUser},
			{"taken username", "POST", PathAdminUsers, "application/json", `{"username":"TAKEN","password":"` + frontPassword + `"}`, 409, CodeUserExists},
			{"weak new password", "POST", PathAdminUsers + "/taken/password", "application/json", `{"password":"short"}`, 400, CodeInvalidUser},
			{"unknown user", "GET", PathAdminUsers + "/nobody", "", "", 404, httpapi.CodeNotFound},
			{"delete unknown", "DELETE", PathAdminUsers + "/nobody", "", "", 404, httpapi.CodeNotFound},
			{"password of unknown", "POST", PathAdminUsers + "/nobody/password", "application/json", `{"password":"` + frontPassword + `"}`, 404, httpapi.CodeNotFound},
			{"TOTP of unknown", "POST", PathAdminUsers + "/nobody/totp", "", "", 404, httpapi.CodeNotFound},
			{"unlock unknown", "POST", PathAdminUsers + "/nobody/unlock", "", "", 404, httpapi.CodeNotFound},
			{"disable unknown", "POST", PathAdminUsers + "/nobody/disable", "", "", 404, httpapi.CodeNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, b := userAdminDo(t, env, tc.method, tc.path, tc.contentType, tc.body)
				var body httpapi.ErrorBody
				if err := json.Unmarshal(b, &body); err != nil || status != tc.status || body.Error.Code != tc.code {
					t.Errorf("%d %s, want %d %s", status, b, tc.status, tc.code)
				}
			})
		}
		if after := len(env.auditEvents()); after != before {
			t.Errorf("refused requests changed something: %d audit events, was %d", after, before)
		}
		if list, _ := env.srv.ListUsers(t.Context()); len(list) != 1 {
			t.Errorf("%d users after refusals", len(list))
		}
	})
}
