package redact

import "testing"

func TestKeyMatcherSensitive(t *testing.T) {
	t.Parallel()
	m := newKeyMatcher([]string{"merchant_ref", "Sort Code"})
	tests := []struct {
		key  string
		want bool
	}{
		// Required spellings.
		{"Password", true},
		{"password", true},
		{"PASSWORD", true},
		{"db_password", true},
		{"x-api-key", true},
		{"X-Api-Key", true},
		{"apiKey", true},
		{"APIKey", true},
		{"APIKEY", true},
		{"XAPIKey", true},
		{"api.key", true},
		{"api key", true},
		{"privateKey", true},
		{"private_key", true},
		{"client_secret", true},
		{"clientSecret", true},
		{"Authorization", true},
		{"authorization_header", true},
		{"set-cookie", true},
		{"Set-Cookie", true},
		{"cardNumber", true},
		{"card_number", true},
		{"CardNumber", true},
		// Every built-in word.
		{"passwd", true},
		{"pwd", true},
		{"secret", true},
		{"token", true},
		{"access_token", true},
		{"refreshToken", true},
		{"auth_header", true},
		{"authHeader", true},
		{"cookie", true},
		{"session", true},
		{"session_id", true},
		{"sessionID", true},
		{"credential", true},
		{"credentials", true},
		{"aws_credentials_file_contents", true},
		{"pan", true},
		{"PAN", true},
		{"card_pan", true},
		{"card", true},
		{"cvv", true},
		{"cvv2", true},
		{"CVC", true},
		{"ssn", true},
		{"userSSN", true},
		{"national_id", true},
		{"nationalID", true},
		{"iban", true},
		{"IBAN", true},
		{"pin", true},
		{"PINCode", true},
		{"pin_code", true},
		{"otp", true},
		{"otp_code", true},
		{"seed", true},
		{"random_seed", true},
		{"passphrase", true},
		{"bearer", true},
		{"signature_key", true},
		{"signatureKey", true},
		{"passcode", true},
		{"totp", true},
		{"access-key", true},
		// Substring words.
		{"dbpassword", true},
		{"userpassword", true},
		{"mysecretvalue", true},
		{"oldPassword", true},
		{"password_new", true},
		{"password2", true},
		{"password_hash", true},
		{"tokens", true},
		{"cookies", true},
		{"api_key_id", true},
		// Extra keys.
		{"merchant_ref", true},
		{"merchantRef", true},
		{"X-Merchant-Ref", true},
		{"sort_code", true},
		{"SortCode", true},

		// Innocuous keys.
		{"", false},
		{"span", false},
		{"span_id", false},
		{"spanID", false},
		{"company", false},
		{"companyName", false},
		{"spin", false},
		{"spinner", false},
		{"pinned", false},
		{"panel", false},
		{"expand", false},
		{"opinion", false},
		{"user", false},
		{"user_id", false},
		{"request_id", false},
		{"method", false},
		{"status", false},
		{"latency", false},
		{"auth", false},
		{"auth_method", false},
		{"key", false},
		{"key_id", false},
		{"public_key", false},
		{"tokenizer", false},
		{"tokenized", false},
		{"seedling", false},
		{"happen", false},
		{"IDs", false},
		{"merchant", false},
		// A sensitive word followed only by metadata words.
		{"tokens_total", false},
		{"token_count", false},
		{"token_type", false},
		{"tokenType", false},
		{"token_expires_at", false},
		{"password_changed_at", false},
		{"passwordLength", false},
		{"card_brand", false},
		{"card_last4", false},
		{"cardLast4", false},
		{"card_bin", false},
		{"pan_masked", false},
		{"secret_name", false},
		{"secretRef", false},
		{"session_count", false},
		{"session_duration", false},
		{"cookies_enabled", false},
		{"authorization_decision", false},
		{"otp_attempts", false},
		{"token_url", false},
		{"token_expires_in", false},
		{"merchant_ref_type", false},
	}
	for _, tc := range tests {
		name := tc.key
		if name == "" {
			name = "empty"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := m.sensitive(tc.key); got != tc.want {
				t.Errorf("sensitive(%q) = %v, want %v", tc.key, got, tc.want)
			}
		})
	}
}

func TestSplitKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want []string
	}{
		{"db_password", []string{"db", "password"}},
		{"x-api-key", []string{"x", "api", "key"}},
		{"APIKey", []string{"api", "key"}},
		{"cardNumber", []string{"card", "number"}},
		{"cvv2", []string{"cvv", "2"}},
		{"userIDs", []string{"user", "ids"}},
		{"a.b c", []string{"a", "b", "c"}},
		{"__", nil},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			buf, starts := splitKey(tc.key, nil, nil)
			var got []string
			for i, s := range starts {
				e := len(buf)
				if i+1 < len(starts) {
					e = starts[i+1]
				}
				got = append(got, string(buf[s:e]))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("splitKey(%q) = %q, want %q", tc.key, got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("splitKey(%q) = %q, want %q", tc.key, got, tc.want)
				}
			}
		})
	}
}

func TestSensitiveLongKey(t *testing.T) {
	t.Parallel()
	m := newKeyMatcher(nil)
	long := ""
	for range 40 {
		long += "segment_"
	}
	if m.sensitive(long) {
		t.Errorf("long innocuous key reported sensitive")
	}
	if !m.sensitive(long + "password") {
		t.Errorf("long key ending in password not reported sensitive")
	}
}
