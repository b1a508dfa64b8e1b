package identity

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// frontArgon returns a server that can only hash passwords, with cheap
// argon2id parameters.
func frontArgon(iterations uint32) *Server {
	return &Server{cfg: Config{Argon2MemoryKiB: 1024, Argon2Iterations: iterations, Argon2Parallelism: 1}}
}

func TestPasswordHashing(t *testing.T) {
	t.Parallel()
	s := frontArgon(1)
	phc, err := s.hashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=1024,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(phc) {
		t.Fatalf("PHC string %q", phc)
	}
	if other, _ := s.hashPassword("correct horse battery staple"); other == phc {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	for _, tc := range []struct {
		name     string
		s        *Server
		password string
		ok       bool
		rehash   bool
	}{
		{"right", s, "correct horse battery staple", true, false},
		{"wrong", s, "correct horse battery stapl", false, false},
		{"empty", s, "", false, false},
		{"parameters changed", frontArgon(2), "correct horse battery staple", true, true},
	} {
		ok, rehash, err := tc.s.verifyPassword(phc, tc.password)
		if err != nil || ok != tc.ok || rehash != tc.rehash {
			t.Errorf("%s: ok %v rehash %v err %v", tc.name, ok, rehash, err)
		}
	}
}

func TestParsePHCRefusesBadHashes(t *testing.T) {
	t.Parallel()
	salt, key := "c2FsdHNhbHRzYWx0c2FsdA", "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
	for _, phc := range []string{
		"",
		"$argon2i$v=19$m=1024,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=1024,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=1$" + salt + "$" + key + "$x",
		"$argon2id$v=19$m=99999999,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=0,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=1,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=1,p=1,x=2$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=1,p=-1$" + salt + "$" + key,
		"$argon2id$v=19$m=1024,t=1,p=1$!!$" + key,
		"$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$c2hvcnQ",
		"bcrypt$2a$10$abc",
	} {
		if _, _, _, err := parsePHC(phc); err == nil {
			t.Errorf("parsePHC(%q) accepted", phc)
		}
		if ok, _, err := frontArgon(1).verifyPassword(phc, "x"); ok || err == nil {
			t.Errorf("verifyPassword accepted %q", phc)
		}
	}
}

func TestPasswordPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, username, password string
		ok                       bool
	}{
		{"long enough", "alice", "twelve chars", true},
		{"unicode counts characters", "alice", "ééééééééééé€", true},
		{"too short", "alice", "eleven char", false},
		{"too long", "alice", strings.Repeat("a", maxPasswordBytes+1), false},
		{"the username", "alice.longname", "Alice.LongName", false},
		{"not UTF-8", "alice", "\xff\xfe" + strings.Repeat("a", 12), false},
	} {
		err := checkPassword(tc.username, tc.password)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidUser)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestUserLifecycle(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		s, ctx := f.env.srv, f.ctx
		u, err := s.CreateUser(ctx, NewUser{Username: "Alice", Password: frontPassword, Email: "alice@example.com", Name: "Alice A."})
		if err != nil {
			t.Fatal(err)
		}
		if u.Username != "alice" || !strings.HasPrefix(u.ID, "usr_") || u.TOTP || u.Disabled || u.CreatedAt.IsZero() {
			t.Errorf("created %+v", u)
		}
		if _, err := s.CreateUser(ctx, NewUser{Username: "ALICE", Password: frontPassword}); !errors.Is(err, ErrUserExists) {
			t.Errorf("duplicate username: %v", err)
		}
		for _, tc := range []struct {
			name string
			nu   NewUser
		}{
			{"empty username", NewUser{Username: "", Password: frontPassword}},
			{"space in username", NewUser{Username: "a b", Password: frontPassword}},
			{"reserved prefix", NewUser{Username: "usr_x", Password: frontPassword}},
			{"long username", NewUser{Username: strings.Repeat("a", 129), Password: frontPassword}},
			{"short password", NewUser{Username: "bob", Password: "short"}},
			{"password is the username", NewUser{Username: "bobthebuilder", Password: "BobTheBuilder"}},
			{"bad email", NewUser{Username: "bob", Password: frontPassword, Email: "bob"}},
			{"control character in name", NewUser{Username: "bob", Password: frontPassword, Name: "Bob\n"}},
		} {
			if _, err := s.CreateUser(ctx, tc.nu); !errors.Is(err, ErrInvalidUser) {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
		bob, err := s.CreateUser(ctx, NewUser{Username: "bob", Password: frontPassword})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{u.ID, "alice", "ALICE"} {
			if got, err := s.GetUser(ctx, key); err != nil || got.ID != u.ID || got.Email != "alice@example.com" {
				t.Errorf("GetUser(%q) = %+v, %v", key, got, err)
			}
		}
		list, err := s.ListUsers(ctx)
		if err != nil || len(list) != 2 || list[0].ID != u.ID || list[1].ID != bob.ID {
			t.Errorf("ListUsers = %v, %v", list, err)
		}

		if err := s.SetPassword(ctx, u.ID, "short"); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("SetPassword with a short password: %v", err)
		}
		if err := s.SetPassword(ctx, u.ID, "a brand new passphrase"); err != nil {
			t.Fatal(err)
		}
		c := f.addPublicClient("spa", "SPA")
		if _, err := s.authenticatePassword(ctx, nil, c, "alice", frontPassword); err == nil {
			t.Error("the old password still works")
		}
		if got, err := s.authenticatePassword(ctx, nil, c, "alice", "a brand new passphrase"); err != nil || got.ID != u.ID {
			t.Errorf("new password: %v", err)
		}

		// Disabling and deleting revoke what the user granted.
		for _, g := range []string{"grt_a", "grt_b"} {
			if _, err := db.ExecContext(ctx, "INSERT INTO identity_grants (grant_id, client_id, subject, scope, created_at) VALUES (?, 'spa', ?, 'openid', ?)",
				g, map[string]string{"grt_a": u.ID, "grt_b": bob.ID}[g], time.Now().UnixMilli()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DisableUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetUser(ctx, u.ID); !got.Disabled {
			t.Error("not disabled")
		}
		if err := s.EnableUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		revoked := map[string]bool{}
		rows, err := db.QueryContext(ctx, "SELECT grant_id, revoked_at IS NOT NULL FROM identity_grants")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			var r bool
			if err := rows.Scan(&id, &r); err != nil {
				t.Fatal(err)
			}
			revoked[id] = r
		}
		rows.Close()
		if !revoked["grt_a"] || !revoked["grt_b"] {
			t.Errorf("grants revoked: %v", revoked)
		}
		if _, err := s.GetUser(ctx, bob.ID); !errors.Is(err, ErrUserNotFound) {
			t.Errorf("deleted user: %v", err)
		}
		for name, op := range map[string]func() error{
			"SetPassword": func() error { return s.SetPassword(ctx, "nobody", frontPassword) },
			"DisableUser": func() error { return s.DisableUser(ctx, "nobody") },
			"DeleteUser":  func() error { return s.DeleteUser(ctx, bob.ID) },
			"UnlockUser":  func() error { return s.UnlockUser(ctx, "usr_0") },
			"EnrollTOTP":  func() error { _, err := s.EnrollTOTP(ctx, "nobody"); return err },
			"DisableTOTP": func() error { return s.DisableTOTP(ctx, "nobody") },
		} {
			if err := op(); !errors.Is(err, ErrUserNotFound) {
				t.Errorf("%s of an unknown user: %v", name, err)
			}
		}

		// Every change is audited, without the password.
		want := map[int]int{actCreate: 2, actPasswordChange: 1, actAccountDisable: 1, actAccountEnable: 1, actAccountDelete: 1}
		for act, n := range want {
			if got := f.env.countEvents(classAccountChange, act, audit.StatusSuccess); got != n {
				t.Errorf("%d account change events of activity %d, want %d", got, act, n)
			}
		}
		raw, _ := json.Marshal(f.env.auditEvents())
		if strings.Contains(string(raw), frontPassword) || strings.Contains(string(raw), "brand new") || strings.Contains(string(raw), "argon2id") {
			t.Error("the audit log holds a password or its hash")
		}
	})
}

func TestLoginRehashesOnParameterChange(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		c := f.addPublicClient("spa", "SPA")
		u := f.addUser("alice")
		hash := func() string {
			var h string
			if err := db.QueryRowContext(f.ctx, "SELECT password_hash FROM identity_users WHERE user_id = ?", u.ID).Scan(&h); err != nil {
				t.Fatal(err)
			}
			return h
		}
		if !strings.Contains(hash(), "t=1,") {
			t.Fatalf("hash %q", hash())
		}
		// No request is in flight: the server's configuration can change.
		f.env.srv.cfg.Argon2Iterations = 2
		if _, err := f.env.srv.authenticatePassword(f.ctx, nil, c, "alice", frontPassword); err != nil {
			t.Fatal(err)
		}
		if h := hash(); !strings.Contains(h, "t=2,") {
			t.Errorf("not rehashed: %q", h)
		}
		if _, err := f.env.srv.authenticatePassword(f.ctx, nil, c, "alice", frontPassword); err != nil {
			t.Errorf("rehashed password refused: %v", err)
		}
	})
}

func TestTOTPSteps(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newFrontFixture(t, db)
		s, ctx := f.env.srv, f.ctx
		u := f.addUser("alice")
		secret := f.frontEnroll("alice")
		if got, _ := s.GetUser(ctx, u.ID); !got.TOTP {
			t.Error("not enrolled")
		}
		var sealed []byte
		if err := db.QueryRowContext(ctx, "SELECT totp_sealed FROM identity_users WHERE user_id = ?", u.ID).Scan(&sealed); err != nil {
			t.Fatal(err)
		}
		if len(sealed) == 0 || strings.Contains(string(sealed), secret) {
			t.Error("the TOTP secret is not sealed")
		}
		code := func(d time.Duration) string { return frontTOTPCode(t, secret, f.env.clock.Now().Add(d)) }
		check := func(name, c string, ok bool) {
			t.Helper()
			err := s.checkTOTP(ctx, u.ID, c)
			if ok && err != nil || !ok && !errors.Is(err, errTOTPInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		check("malformed", "12345", false)
		check("not digits", "12345a", false)
		check("two steps ago", code(-60*time.Second), false)
		previous, current, next := code(-30*time.Second), code(0), code(30*time.Second)
		check("previous step", previous, true)
		check("previous step again", previous, false)
		check("next step", next, true)
		check("current step after the next", current, false)
		f.env.clock.Advance(90 * time.Second)
		check("a later step", code(0), true)

		if err := s.DisableTOTP(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetUser(ctx, u.ID); got.TOTP {
			t.Error("TOTP still enrolled")
		}
		if f.env.countEvents(classAccountChange, actMFAEnable, audit.StatusSuccess) != 1 || f.env.countEvents(classAccountChange, actMFADisable, audit.StatusSuccess) != 1 {
			t.Error("TOTP changes not audited")
		}
		raw, _ := json.Marshal(f.env.auditEvents())
		if strings.Contains(string(raw), secret) {
			t.Error("the audit log holds the TOTP secret")
		}
	})
}
