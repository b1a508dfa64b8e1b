package redact

import (
	"strings"
	"testing"
)

// FuzzRedactString checks String on arbitrary input: it must not panic, must
// be idempotent, must leave no Luhn-valid 13-19 digit run and must remove
// every JWT the input held.
func FuzzRedactString(f *testing.F) {
	seeds := []string{
		"",
		"dial failed: password=hunter2 host=db",
		"card 4111 1111 1111 1111 declined",
		"x4111111111111111y 5500-0000-0000-0004",
		"token " + testJWT + " rejected",
		testJWE,
		"Authorization: Bearer abc.def",
		"Basic dXNlcjpwYXNz and basic auth",
		testPEM,
		"-----BEGIN RSA PRIVATE KEY-----\nMIIB",
		`{"password":"a\"b","pin":1234,"tokens":[1,2],"nested":{"secret":"s"}}`,
		`msg={\"token\":\"abc\"}`,
		"postgres://app:s3cret@db:5432/x",
		"bwk_0123456789abcdefghijKLMN",
		"password=[REDACTED] [REDACTED]4111111111111111",
		"Cookie: a=b; c=d\nx",
		"a=password=secret pwd==x secret := y",
		"token_type=Bearer expires_in=300",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := String(in)
		if again := String(out); again != out {
			t.Fatalf("not idempotent:\n in    %q\n once  %q\n twice %q", in, out, again)
		}
		if run, ok := luhnRun(out); ok {
			t.Fatalf("Luhn-valid digit run %q left in %q (input %q)", run, out, in)
		}
		for _, jwt := range jwtRe.FindAllString(in, -1) {
			if strings.Contains(out, jwt) {
				t.Fatalf("JWT %q left in %q", jwt, out)
			}
		}
		if jwt := jwtRe.FindString(out); jwt != "" {
			t.Fatalf("JWT shape %q in output %q (input %q)", jwt, out, in)
		}
	})
}

// luhnRun returns the first maximal run of 13 to 19 contiguous digits in s
// that passes the Luhn check.
func luhnRun(s string) (string, bool) {
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if n := j - i; n >= minCardDigits && n <= maxCardDigits && luhn(s[i:j]) {
			return s[i:j], true
		}
		i = j
	}
	return "", false
}
