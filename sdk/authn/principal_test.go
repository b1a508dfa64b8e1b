package authn

import "testing"

func TestPrincipalIsUser(t *testing.T) {
	act := &Actor{Subject: "bank-api"}
	for _, tc := range []struct {
		name string
		p    *Principal
		want bool
	}{
		{"user token", &Principal{Subject: "usr_1", ClientID: "web"}, true},
		{"client credentials", &Principal{Subject: "web", ClientID: "web"}, false},
		{"exchanged user token", &Principal{Subject: "usr_1", ClientID: "bank-api", Actor: act,
			Claims: map[string]any{"subject_type": "user"}}, true},
		// The acting client's id differs from the subject's: without
		// subject_type the client would pass for a user.
		{"exchanged client token", &Principal{Subject: "web", ClientID: "bank-api", Actor: act,
			Claims: map[string]any{"subject_type": "client"}}, false},
		{"exchanged without subject_type", &Principal{Subject: "usr_1", ClientID: "bank-api", Actor: act}, false},
		{"nil", nil, false},
		{"no subject", &Principal{ClientID: "web"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.IsUser(); got != tc.want {
				t.Fatalf("IsUser() = %v, want %v", got, tc.want)
			}
		})
	}
}
