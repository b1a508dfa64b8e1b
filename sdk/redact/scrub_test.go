package redact

import (
	"strings"
	"testing"
)

const (
	testJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." +
		"eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ." +
		"SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	testJWE = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ." +
		"OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe." +
		"48V1_ALb6US04U3b." +
		"5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji." +
		"XFBoMYUZodetZdvTiFvSkQ"
	testPEM = "-----BEGIN PRIVATE KEY-----\n" +
		"MC4CAQAwBQYDK2VwBCIEIBvKMz5wHXbZ8fGxqz6B3FvT3M0j8H8dP0tRZ0xS1b2c\n" +
		"-----END PRIVATE KEY-----\n"
)

func TestStringRedacts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		// JWT / JWS / JWE.
		{"jwt alone", testJWT, "[REDACTED]"},
		{"jwt in text", "token " + testJWT + " rejected", "token [REDACTED] rejected"},
		{"jwt after equals", "id_token=" + testJWT + "&state=x", "id_token=[REDACTED]&state=x"},
		{"jwe five parts", "got " + testJWE + ".", "got [REDACTED]."},
		{"unsecured jws empty signature", "t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0. end", "t=[REDACTED] end"},
		{"jwt in quotes", `"` + testJWT + `"`, `"[REDACTED]"`},

		// Bearer / Basic.
		{"bearer", "Bearer abcDEF123._~+/==", "Bearer [REDACTED]"},
		{"bearer lower", "sent bearer 9f8e7d6c5b4a", "sent bearer [REDACTED]"},
		{"bearer upper", "BEARER Zm9vYmFyYmF6", "BEARER [REDACTED]"},
		{"basic", "Basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED]"},
		{"basic in header dump", "headers: X-Auth: Basic YWxhZGRpbjpvcGVuc2VzYW1l\n", "headers: X-Auth: Basic [REDACTED]\n"},
		{"authorization header", "Authorization: Bearer abc", "Authorization: [REDACTED]"},
		{"authorization json", `{"Authorization":"Bearer abc"}`, `{"Authorization":"[REDACTED]"}`},

		// PEM.
		{"pem block", "key:\n" + testPEM + "loaded", "key:\n[REDACTED]\nloaded"},
		{"pem rsa", "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----", "[REDACTED]"},
		{"pem ec", "x -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY----- y", "x [REDACTED] y"},
		{"pem openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----", "[REDACTED]"},
		{"pem encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----", "[REDACTED]"},
		{"pem truncated", "parse: -----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBvKM", "parse: [REDACTED]"},
		{"pem json escaped", `{"key":"-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----\n","id":1}`, `{"key":"[REDACTED]\n","id":1}`},
		{"pem pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----", "[REDACTED]"},

		// Card numbers.
		{"visa", "card 4111111111111111 declined", "card [REDACTED] declined"},
		{"visa spaces", "card 4111 1111 1111 1111 declined", "card [REDACTED] declined"},
		{"visa dashes", "card 4111-1111-1111-1111.", "card [REDACTED]."},
		{"visa mixed separators", "4111 1111-1111 1111", "[REDACTED]"},
		{"amex", "amex 378282246310005", "amex [REDACTED]"},
		{"amex grouped", "amex 3782 822463 10005", "amex [REDACTED]"},
		{"diners 14", "30569309025904", "[REDACTED]"},
		{"13 digits", "pan:4222222222222", "pan:[REDACTED]"},
		{"19 digits", "x 6011000990139424 (no) 4000000000000000006", "x [REDACTED] (no) [REDACTED]"},
		{"glued to letters", "ref4111111111111111x", "ref[REDACTED]x"},
		{"after short number", "qty 12 4111 1111 1111 1111", "qty 12 [REDACTED]"},
		{"two cards", "4111111111111111,5500000000000004", "[REDACTED],[REDACTED]"},
		{"card in json number", `{"amount":12,"number":5555555555554444}`, `{"amount":12,"number":[REDACTED]}`},

		// key=value pairs in free text.
		{"pair equals", "dial failed: password=hunter2 host=db", "dial failed: password=[REDACTED] host=db"},
		{"pair colon", "password: hunter2", "password: [REDACTED]"},
		{"pair json", `{"user":"bob","password":"hunter2"}`, `{"user":"bob","password":"[REDACTED]"}`},
		{"pair json spaces", `{"client_secret" : "s3cr et"}`, `{"client_secret" : "[REDACTED]"}`},
		{"pair json escaped quote in value", `{"pwd":"a\"b","x":1}`, `{"pwd":"[REDACTED]","x":1}`},
		{"pair json number", `{"pin":1234,"x":1}`, `{"pin":[REDACTED],"x":1}`},
		{"pair quoted key with space", `{"auth header": "abc"}`, `{"auth header": "[REDACTED]"}`},
		{"pair escaped quoted key", `{\"api key\":\"abc\"}`, `{\"api key\":\"[REDACTED]\"}`},
		{"pair single quotes", `{'api_key': 'abc123'}`, `{'api_key': '[REDACTED]'}`},
		{"pair escaped json", `msg={\"token\":\"abc\",\"a\":1}`, `msg={\"token\":\"[REDACTED]\",\"a\":1}`},
		{"pair query string", "GET /cb?code=1&access_token=abc123&state=xyz", "GET /cb?code=1&access_token=[REDACTED]&state=xyz"},
		{"pair quoted text style", `password="two words" ok=1`, `password="[REDACTED]" ok=1`},
		{"pair unterminated quote", `password="abc`, `password="[REDACTED]`},
		{"pair go assignment", "secret := abc", "secret := [REDACTED]"},
		{"pair cli flag", "--db-password=abc --port=5", "--db-password=[REDACTED] --port=5"},
		{"pair camel key", "privateKey=abc,", "privateKey=[REDACTED],"},
		{"pair header", "X-Api-Key: k-123\r\nHost: x", "X-Api-Key: [REDACTED]\r\nHost: x"},
		{"pair cookie to end of line", "Cookie: a=b; sid=xyz\nHost: x", "Cookie: [REDACTED]\nHost: x"},
		{"pair set-cookie", "set-cookie=sid=abc; Path=/; HttpOnly", "set-cookie=[REDACTED]"},
		{"pair array", `tokens=[a, b] n=1`, `tokens=[[REDACTED]] n=1`},
		{"pair nested object", `{"credentials":{"user":"u","password":"p"}}`, `{"credentials":{"user":"u","password":"[REDACTED]"}}`},
		{"pair prose", "verify token: expired", "verify token: [REDACTED]"},
		{"pair after non sensitive pair", "a=password=secret", "a=password=[REDACTED]"},
		{"pair extra equals", "pwd==abc", "pwd=[REDACTED]"},

		// URL userinfo.
		{"dsn", "dial postgres://app:s3cret@db:5432/ledger failed", "dial postgres://app:[REDACTED]@db:5432/ledger failed"},
		{"dsn hash in password", "amqp://u:a#b?c@mq/vhost", "amqp://u:[REDACTED]@mq/vhost"},
		{"dsn in json", `{"dsn":"postgres://u:pw@h/db","x":"a@b"}`, `{"dsn":"postgres://u:[REDACTED]@h/db","x":"a@b"}`},
		{"dsn at in password", "redis://u:p@ss@cache:6379", "redis://u:[REDACTED]@cache:6379"},

		// Bulwark credentials.
		{"bwk", "using bwk_0123456789abcdefghijKLMN_- now", "using [REDACTED] now"},
		{"bwk in pair", "key=bwk_0123456789abcdefghijKLMN", "key=[REDACTED]"},

		// Mixed.
		{"several", "user=bob password=x " + testJWT + " 4111111111111111", "user=bob password=[REDACTED] [REDACTED] [REDACTED]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := String(tc.in)
			if got != tc.want {
				t.Errorf("String(%q)\n got  %q\n want %q", tc.in, got, tc.want)
			}
			if again := String(got); again != got {
				t.Errorf("not idempotent: String(%q) = %q", got, again)
			}
		})
	}
}

func TestStringKeeps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"short", "ok"},
		{"plain message", "payment accepted"},
		{"order id not luhn", "order 1234567890123456 shipped"},
		{"timestamp ms", "at 1700000000001"},
		{"unix nanos not luhn", "t=1700000000000000001"},
		{"long digit run", "trace 41111111111111111111111"},
		{"date and number", "2024-01-15 12345 rows"},
		{"small numbers", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"},
		{"iso time", "2024-01-15T10:30:00.123456789Z"},
		{"ipv6", "dial [2001:db8::1]:443"},
		{"uuid", "req 3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b"},
		{"innocuous pairs", "user=alice status=200 span_id=4bf92f3577b34da6 company=Acme"},
		{"metadata pairs", "token_type=Bearer tokens_total=5 card_brand=visa"},
		{"prose basic", "basic auth failed"},
		{"prose bearer", "missing bearer token"},
		{"prose bearer capital", "Bearer Token required"},
		{"url without password", "https://api.bulwark.dev/v1/tokens?x=1"},
		{"url user only", "ssh://git@github.com/x"},
		{"eyJ without dots", "eyJhbGciOiJIUzI1NiJ9"},
		{"public key pem", "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"},
		{"certificate pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
		{"bwk too short", "bwk_short"},
		{"placeholder already", "password=[REDACTED] host=db"},
		{"go error chain", "ledger: post entry: context deadline exceeded"},
		{"span and pan", "span=abc company=xyz spin=1"},
		{"non-ascii", "überweisung fehlgeschlagen: konto gesperrt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := String(tc.in); got != tc.in {
				t.Errorf("String(%q) = %q, want it unchanged", tc.in, got)
			}
		})
	}
}

func TestLuhn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"4111111111111111", true},
		{"4111 1111 1111 1111", true},
		{"4111111111111112", false},
		{"79927398713", true},
		{"0", true},
		{"1234567890123456", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := luhn(tc.in); got != tc.want {
				t.Errorf("luhn(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestCardLikeInt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   int64
		want bool
	}{
		{"visa", 4111111111111111, true},
		{"negative visa", -4111111111111111, true},
		{"12 digits", 123456789012, false},
		{"not luhn", 4111111111111112, false},
		{"19 digits luhn", 4000000000000000006, true},
		{"min int64", -9223372036854775808, false},
		{"zero", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := cardLikeInt(tc.in); got != tc.want {
				t.Errorf("cardLikeInt(%d) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	if cardLikeUint(18446744073709551615) {
		t.Errorf("20-digit uint64 reported as a card number")
	}
}

func TestCustomPlaceholder(t *testing.T) {
	t.Parallel()
	r := newRedactor(nil, "<hidden>")
	in := "password=x " + testJWT
	got, changed := r.scrub(in)
	if want := "password=<hidden> <hidden>"; got != want || !changed {
		t.Fatalf("scrub(%q) = %q, %v; want %q, true", in, got, changed, want)
	}
	if again, ch := r.scrub(got); again != got || ch {
		t.Fatalf("not idempotent with custom placeholder: %q -> %q", got, again)
	}
	if strings.Contains(got, DefaultPlaceholder) {
		t.Fatalf("default placeholder used: %q", got)
	}
}
