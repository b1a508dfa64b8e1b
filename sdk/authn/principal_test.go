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

func TestPrincipalOriginClient(t *testing.T) {
	user := map[string]any{"subject_type": "user"}
	client := map[string]any{"subject_type": "client"}
	for _, tc := range []struct {
		name string
		p    *Principal
		want string
	}{
		{"user token", &Principal{Subject: "usr_1", ClientID: "web"}, "web"},
		{"client credentials", &Principal{Subject: "web", ClientID: "web"}, "web"},
		{"user token exchanged by the gateway", &Principal{Subject: "usr_1", ClientID: "bank-api", Claims: user,
			Actor: &Actor{Subject: "bank-api", Actor: &Actor{Subject: "web"}}}, "web"},
		{"exchanged twice", &Principal{Subject: "usr_1", ClientID: "payments", Claims: user,
			Actor: &Actor{Subject: "payments", Actor: &Actor{Subject: "bank-api", Actor: &Actor{Subject: "web"}}}}, "web"},
		{"client token exchanged", &Principal{Subject: "batch", ClientID: "bank-api", Claims: client,
			Actor: &Actor{Subject: "bank-api"}}, "batch"},
		{"nil", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.OriginClient(); got != tc.want {
				t.Fatalf("OriginClient() = %q, want %q", got, tc.want)
			}
		})
	}
}
