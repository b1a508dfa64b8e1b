package redact

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// secret is a generated secret: the text to embed in a log record and the
// strings that must not appear in the output.
type secret struct {
	text    string
	needles []string // substrings of text
	derived []string // other forms, such as a card number's digits alone
}

const (
	alnum     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	base64url = alnum + "-_"
	token68   = alnum + "-._~+/"
)

func stringFrom(alphabet string, minLen, maxLen int) *rapid.Generator[string] {
	return rapid.StringOfN(rapid.RuneFrom([]rune(alphabet)), minLen, maxLen, -1)
}

// genSecretValue generates a password-like value that holds at least one
// letter and one digit, so it cannot collide with the fixed parts of a log
// line or with the placeholder.
func genSecretValue() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		body := stringFrom(alnum+"!#$%*_-+/.~@^", 8, 30).Draw(t, "body")
		letter := stringFrom("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 1, 1).Draw(t, "letter")
		digit := stringFrom("0123456789", 1, 1).Draw(t, "digit")
		return letter + body + digit
	})
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func genJWT() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		header := map[string]any{
			"alg": rapid.SampledFrom([]string{"HS256", "RS256", "ES256", "EdDSA", "PS512", "none"}).Draw(t, "alg"),
		}
		if rapid.Bool().Draw(t, "typ") {
			header["typ"] = rapid.SampledFrom([]string{"JWT", "at+jwt", "dpop+jwt"}).Draw(t, "typval")
		}
		if rapid.Bool().Draw(t, "kid") {
			header["kid"] = stringFrom(alnum, 1, 20).Draw(t, "kidval")
		}
		claims := map[string]any{}
		for _, c := range rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"sub", "iss", "aud", "jti", "scope", "name", "cnf"}), 0, 5, rapid.ID[string]).Draw(t, "claims") {
			claims[c] = rapid.String().Draw(t, c)
		}
		if rapid.Bool().Draw(t, "iat") {
			claims["iat"] = rapid.Int64Range(0, 1<<40).Draw(t, "iatval")
		}
		hb, err := json.Marshal(header)
		if err != nil {
			t.Fatalf("marshal header: %v", err)
		}
		pb, err := json.Marshal(claims)
		if err != nil {
			t.Fatalf("marshal claims: %v", err)
		}
		parts := []string{b64(hb), b64(pb)}
		sig := b64(rapid.SliceOfN(rapid.Byte(), 16, 64).Draw(t, "sig"))
		if rapid.Bool().Draw(t, "jwe") {
			// header.encrypted_key.iv.ciphertext.tag
			parts = []string{b64(hb),
				b64(rapid.SliceOfN(rapid.Byte(), 16, 64).Draw(t, "cek")),
				b64(rapid.SliceOfN(rapid.Byte(), 12, 12).Draw(t, "iv")),
				b64(rapid.SliceOfN(rapid.Byte(), 16, 128).Draw(t, "ct")),
				b64(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "tag"))}
			tok := strings.Join(parts, ".")
			return secret{text: tok, needles: append([]string{tok}, parts[1:]...)}
		}
		tok := parts[0] + "." + parts[1] + "." + sig
		needles := []string{tok, sig}
		if len(parts[1]) >= 8 {
			needles = append(needles, parts[1])
		}
		return secret{text: tok, needles: needles}
	})
}

// genCard generates a Luhn-valid card number of 13 to 19 digits, contiguous
// or in groups of 3 to 6 digits separated by single spaces or dashes.
func genCard() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		n := rapid.IntRange(minCardDigits, maxCardDigits).Draw(t, "len")
		digits := []byte(stringFrom("0123456789", n-1, n-1).Draw(t, "digits"))
		for d := byte('0'); d <= '9'; d++ {
			if luhn(string(digits) + string(d)) {
				digits = append(digits, d)
				break
			}
		}
		plain := string(digits)
		var b strings.Builder
		switch rapid.IntRange(0, 2).Draw(t, "format") {
		case 0:
			b.WriteString(plain)
		case 1: // groups of four, the remainder joined to the last group
			sep := rapid.SampledFrom([]string{" ", "-"}).Draw(t, "sep4")
			for i := 0; i < n; i += 4 {
				end := i + 4
				if n-end < 3 {
					end = n
				}
				if i > 0 {
					b.WriteString(sep)
				}
				b.WriteString(plain[i:end])
				if end == n {
					break
				}
			}
		default: // random groups of 3 to 6 and random separators
			for i := 0; i < n; {
				size := rapid.IntRange(3, 6).Draw(t, "group")
				if n-(i+size) < 3 {
					size = n - i
				}
				if i > 0 {
					b.WriteString(rapid.SampledFrom([]string{" ", "-"}).Draw(t, "sep"))
				}
				b.WriteString(plain[i : i+size])
				i += size
			}
		}
		formatted := b.String()
		s := secret{text: formatted, needles: []string{formatted}}
		if plain != formatted {
			s.derived = []string{plain}
		}
		return s
	})
}

var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 1024)
})

func genPEM() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		var der []byte
		label := "PRIVATE KEY"
		switch rapid.IntRange(0, 3).Draw(t, "kind") {
		case 0:
			seed := rapid.SliceOfN(rapid.Byte(), ed25519.SeedSize, ed25519.SeedSize).Draw(t, "seed")
			k := ed25519.NewKeyFromSeed(seed)
			b, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				t.Fatalf("marshal ed25519: %v", err)
			}
			der = b
		case 1:
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatalf("generate ecdsa: %v", err)
			}
			b, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				t.Fatalf("marshal ecdsa: %v", err)
			}
			der = b
		case 2:
			k, err := rsaKey()
			if err != nil {
				t.Fatalf("generate rsa: %v", err)
			}
			b, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				t.Fatalf("marshal rsa: %v", err)
			}
			der = b
		default:
			label = rapid.SampledFrom([]string{"RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY"}).Draw(t, "label")
			der = rapid.SliceOfN(rapid.Byte(), 32, 600).Draw(t, "body")
		}
		var buf bytes.Buffer
		if err := pem.Encode(&buf, &pem.Block{Type: label, Bytes: der}); err != nil {
			t.Fatalf("pem encode: %v", err)
		}
		text := buf.String()
		if rapid.Bool().Draw(t, "truncate") {
			header := len("-----BEGIN " + label + "-----")
			text = text[:rapid.IntRange(header, len(text)-1).Draw(t, "cut")]
		}
		var needles []string
		for _, line := range strings.Split(text, "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				needles = append(needles, line)
			}
		}
		return secret{text: text, needles: needles}
	})
}

func genBearer() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		if rapid.Bool().Draw(t, "basic") {
			user := stringFrom(alnum, 1, 16).Draw(t, "user")
			pass := genSecretValue().Draw(t, "pass")
			cred := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
			scheme := rapid.SampledFrom([]string{"Basic", "basic", "BASIC"}).Draw(t, "scheme")
			return secret{text: scheme + " " + cred, needles: []string{cred, strings.TrimRight(cred, "=")}}
		}
		tok := stringFrom(token68, 16, 80).Draw(t, "token")
		pad := rapid.SampledFrom([]string{"", "=", "=="}).Draw(t, "pad")
		scheme := rapid.SampledFrom([]string{"Bearer", "bearer", "BEARER", "BeArEr"}).Draw(t, "scheme")
		return secret{text: scheme + " " + tok + pad, needles: []string{tok}}
	})
}

func genBulwarkToken() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		tok := "bwk_" + stringFrom(base64url, 20, 48).Draw(t, "tok")
		return secret{text: tok, needles: []string{tok, tok[4:]}}
	})
}

func genURLPassword() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		scheme := rapid.SampledFrom([]string{"postgres", "redis", "amqp", "https", "mongodb+srv"}).Draw(t, "scheme")
		user := stringFrom(alnum, 1, 12).Draw(t, "user")
		pass := genSecretValue().Filter(func(s string) bool { return !strings.ContainsAny(s, "/") }).Draw(t, "pass")
		return secret{text: scheme + "://" + user + ":" + pass + "@db.internal:5432/ledger", needles: []string{pass}}
	})
}

var sensitivePhrases = [][]string{
	{"password"}, {"passwd"}, {"pwd"}, {"secret"}, {"token"}, {"authorization"},
	{"auth", "header"}, {"cookie"}, {"session"}, {"api", "key"}, {"private", "key"},
	{"credential"}, {"pan"}, {"card"}, {"card", "number"}, {"cvv"}, {"cvc"}, {"ssn"},
	{"national", "id"}, {"iban"}, {"pin"}, {"otp"}, {"seed"}, {"passphrase"},
	{"bearer"}, {"signature", "key"}, {"client", "secret"}, {"set", "cookie"},
	{"access", "token"}, {"refresh", "token"}, {"x", "api", "key"},
}

// genSensitiveKey generates a sensitive key in a random style: snake_case,
// SCREAMING_SNAKE, kebab-case, Train-Case, dot.case, camelCase or PascalCase,
// with optional words before and after. spaces allows "auth header" style.
func genSensitiveKey(spaces bool) *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		words := append([]string(nil), rapid.SampledFrom(sensitivePhrases).Draw(t, "phrase")...)
		if rapid.Bool().Draw(t, "prefix") {
			words = append([]string{rapid.SampledFrom([]string{"db", "user", "new", "old", "my", "stripe", "upstream"}).Draw(t, "pre")}, words...)
		}
		if rapid.Bool().Draw(t, "suffix") {
			words = append(words, rapid.SampledFrom([]string{"value", "raw", "2", "plain", "current"}).Draw(t, "suf"))
		}
		styles := []string{"snake", "screaming", "kebab", "train", "dot", "camel", "pascal"}
		if spaces {
			styles = append(styles, "space")
		}
		title := func(w string) string { return strings.ToUpper(w[:1]) + w[1:] }
		switch rapid.SampledFrom(styles).Draw(t, "style") {
		case "snake":
			return strings.Join(words, "_")
		case "screaming":
			return strings.ToUpper(strings.Join(words, "_"))
		case "kebab":
			return strings.Join(words, "-")
		case "train":
			for i := range words {
				words[i] = title(words[i])
			}
			return strings.Join(words, "-")
		case "dot":
			return strings.Join(words, ".")
		case "space":
			return strings.Join(words, " ")
		case "camel":
			for i := 1; i < len(words); i++ {
				words[i] = title(words[i])
			}
			return strings.Join(words, "")
		default:
			for i := range words {
				words[i] = title(words[i])
			}
			return strings.Join(words, "")
		}
	})
}

// genPair generates a secret written as a key/value pair in free text.
func genPair() *rapid.Generator[secret] {
	return rapid.Custom(func(t *rapid.T) secret {
		key := genSensitiveKey(false).Draw(t, "key")
		val := genSecretValue().Draw(t, "value")
		format := rapid.SampledFrom([]string{
			"%s=%s", "%s: %s", "%s:%s", `"%s":"%s"`, `"%s": "%s"`, `%s="%s"`,
			`'%s': '%s'`, `\"%s\":\"%s\"`, "%s = %s",
		}).Draw(t, "format")
		return secret{text: fmt.Sprintf(format, key, val), needles: []string{val}}
	})
}

func genSecret() *rapid.Generator[secret] {
	return rapid.OneOf(genJWT(), genCard(), genPEM(), genBearer(), genBulwarkToken(), genURLPassword(), genPair())
}

var innocuousWords = []string{
	"payment", "accepted", "ledger", "account", "balance", "transfer", "order",
	"shipped", "retry", "timeout", "upstream", "request", "response", "handler",
	"latency", "region", "cluster", "tenant", "company", "span", "spin", "spinner",
	"pinned", "panel", "expand", "opinion", "happened", "basic plan", "plan", "tokenizer",
	"error:", "failed:", "user=alice", "status=200", "span_id=4bf92f3577b34da6",
	"company=Acme", "tokens_total=5", "card_brand=visa", "token_type=Bearer;",
	"v1.2.3", "HTTP/1.1", "10.0.0.1:443", "2024-01-15T10:30:00Z", "/api/v1/payments",
	"(ok)", "[warn]", "{\"a\":1}", "x-request-id", "GET", "POST", "über", "日本",
}

// genInnocuousText generates text that holds nothing the redactor looks for.
// Numbers carry a unit or prefix so that no two of them form a long digit
// sequence.
func genInnocuousText() *rapid.Generator[string] {
	token := rapid.OneOf(
		rapid.SampledFrom(innocuousWords),
		rapid.Map(rapid.IntRange(0, 99999), func(n int) string { return fmt.Sprintf("%dms", n) }),
		rapid.Map(rapid.IntRange(0, 999999), func(n int) string { return fmt.Sprintf("#%d", n) }),
		rapid.Map(rapid.Int64Range(0, 999999999999), func(n int64) string { return fmt.Sprintf("id%dx", n) }),
	)
	return rapid.Map(rapid.SliceOfN(token, 0, 12), func(ws []string) string { return strings.Join(ws, " ") })
}

// embed puts text between random innocuous text.
func embed(t *rapid.T, text string) string {
	before := genInnocuousText().Draw(t, "before")
	after := genInnocuousText().Draw(t, "after")
	parts := []string{text}
	if before != "" {
		parts = append([]string{before}, parts...)
	}
	if after != "" {
		parts = append(parts, after)
	}
	return strings.Join(parts, " ")
}

type stringer string

func (s stringer) String() string { return string(s) }

type valuer struct{ s string }

func (v valuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("detail", v.s), slog.Int("n", 1))
}

type request struct {
	Method string
	Note   string
}

// logPlaced logs text through logger in the given place, one of places.
func logPlaced(t *rapid.T, logger *slog.Logger, place, text string) {
	switch place {
	case "message":
		logger.Info(text)
	case "attr":
		logger.Info("request failed", "detail", text)
	case "group":
		depth := rapid.IntRange(1, 4).Draw(t, "depth")
		a := slog.String("detail", text)
		for i := range depth {
			a = slog.Group(fmt.Sprintf("g%d", i), a, slog.Int("n", i))
		}
		logger.Info("request failed", a)
	case "with":
		logger.With("detail", text).Info("request failed", "n", 1)
	case "withgroup":
		logger.WithGroup("req").With("a", 1).WithGroup("inner").Info("request failed", "detail", text)
	case "error":
		logger.Info("request failed", "err", fmt.Errorf("call ledger: %w", errors.New(text)))
	case "bytes":
		logger.Info("request failed", "body", []byte(text))
	case "stringer":
		logger.Info("request failed", "v", stringer(text))
	case "valuer":
		logger.Info("request failed", "v", valuer{text})
	case "struct":
		logger.Info("request failed", "req", request{Method: "POST", Note: text})
	case "map":
		logger.Info("request failed", "m", map[string]any{"note": text, "n": 1})
	}
}

var places = []string{
	"message", "attr", "group", "with", "withgroup", "error", "bytes",
	"stringer", "valuer", "struct", "map",
}

// outputs logs through NewHandler over a JSON and a text handler and returns
// both outputs.
func outputs(t *rapid.T, log func(t *rapid.T, logger *slog.Logger)) (jsonOut, textOut []byte) {
	var jb, tb bytes.Buffer
	log(t, slog.New(NewHandler(slog.NewJSONHandler(&jb, nil), nil)))
	log(t, slog.New(NewHandler(slog.NewTextHandler(&tb, nil), nil)))
	return jb.Bytes(), tb.Bytes()
}

// assertAbsent fails if any needle appears in the raw output or, for JSON
// output, in any decoded string (also after base64 decoding).
func assertAbsent(t *rapid.T, what string, out []byte, isJSON bool, needles []string) {
	t.Helper()
	for _, n := range needles {
		if n != "" && bytes.Contains(out, []byte(n)) {
			t.Fatalf("%s output holds secret %q:\n%s", what, n, out)
		}
	}
	if !isJSON {
		return
	}
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("%s output is not JSON: %v\n%s", what, err, line)
		}
		walkStrings(v, func(s string) {
			candidates := []string{s}
			if b, err := base64.StdEncoding.DecodeString(s); err == nil {
				candidates = append(candidates, string(b))
			}
			for _, c := range candidates {
				for _, n := range needles {
					if n != "" && strings.Contains(c, n) {
						t.Fatalf("%s output holds secret %q in decoded string %q", what, n, c)
					}
				}
			}
		})
	}
}

func walkStrings(v any, f func(string)) {
	switch t := v.(type) {
	case string:
		f(t)
	case map[string]any:
		for k, x := range t {
			f(k)
			walkStrings(x, f)
		}
	case []any:
		for _, x := range t {
			walkStrings(x, f)
		}
	}
}

func TestPropertySecretsNeverLogged(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		s := genSecret().Draw(t, "secret")
		text := embed(t, s.text)
		for _, n := range s.needles {
			if !strings.Contains(text, n) {
				t.Fatalf("generator bug: needle %q not in %q", n, text)
			}
		}
		place := rapid.SampledFrom(places).Draw(t, "place")
		j, x := outputs(t, func(t *rapid.T, l *slog.Logger) { logPlaced(t, l, place, text) })
		all := append(s.needles, s.derived...)
		assertAbsent(t, "json/"+place, j, true, all)
		assertAbsent(t, "text/"+place, x, false, all)
	})
}

func TestPropertySensitiveKeysRedacted(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		key := genSensitiveKey(true).Draw(t, "key")
		val := genSecretValue().Draw(t, "value")
		place := rapid.IntRange(0, 4).Draw(t, "place")
		j, x := outputs(t, func(t *rapid.T, l *slog.Logger) {
			switch place {
			case 0:
				l.Info("login", key, val)
			case 1:
				l.With(key, val).Info("login")
			case 2:
				l.Info("login", slog.Group("user", slog.String("name", "alice"), slog.String(key, val)))
			case 3:
				l.Info("login", "form", map[string]string{key: val, "name": "alice"})
			case 4:
				l.WithGroup(key).Info("login", "value", val)
			}
		})
		assertAbsent(t, "json", j, true, []string{val})
		assertAbsent(t, "text", x, false, []string{val})
	})
}

func TestPropertyInnocuousTextUnchanged(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		text := genInnocuousText().Draw(t, "text")
		if got := String(text); got != text {
			t.Fatalf("String(%q) = %q", text, got)
		}
		n := rapid.Int64Range(-999999999999, 999999999999).Draw(t, "n")
		log := func(h slog.Handler) {
			slog.New(h).With("component", text).Info(text,
				"detail", text, "n", n, "ok", true, "took", 3*time.Millisecond,
				slog.Group("req", slog.String("note", text), slog.Group("inner", "x", text)))
		}
		noTime := func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}
		for _, mk := range []func(*bytes.Buffer) slog.Handler{
			func(b *bytes.Buffer) slog.Handler {
				return slog.NewJSONHandler(b, &slog.HandlerOptions{ReplaceAttr: noTime})
			},
			func(b *bytes.Buffer) slog.Handler {
				return slog.NewTextHandler(b, &slog.HandlerOptions{ReplaceAttr: noTime})
			},
		} {
			var plain, red bytes.Buffer
			log(mk(&plain))
			log(NewHandler(mk(&red), nil))
			if plain.String() != red.String() {
				t.Fatalf("innocuous record changed:\nplain    %s\nredacted %s", plain.String(), red.String())
			}
		}
	})
}

// fragments are pieces that interact with the rules; concatenating them at
// random exercises idempotence far better than random bytes.
var fragments = []string{
	"password", "pin", "token", "Token", "type", "_", "-", ".", " ", "=", ":", ":=",
	`"`, `'`, `\"`, `\`, "[", "]", "{", "}", ",", ";", "&", "\n", "@", "://",
	DefaultPlaceholder, "4111", "1111", "4111111111111111", "5500000000000004", "12",
	"0", "7", "eyJ", "eyJhbGciOiJIUzI1NiJ9", "abc", "x", "Bearer ", "basic ", "Basic",
	"==", "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "bwk_",
	"0123456789abcdefghij", "postgres://u:p@h", "Cookie", "Authorization", "count",
	"last", "4",
}

func TestPropertyScrubIdempotent(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.SliceOfN(rapid.SampledFrom(fragments), 1, 30).Draw(t, "parts")
		in := strings.Join(parts, "")
		out := String(in)
		if again := String(out); again != out {
			t.Fatalf("not idempotent:\n in    %q\n once  %q\n twice %q", in, out, again)
		}
		if run, ok := luhnRun(out); ok {
			t.Fatalf("Luhn-valid run %q left in %q", run, out)
		}
		if jwt := jwtRe.FindString(out); jwt != "" {
			t.Fatalf("JWT shape %q left in %q", jwt, out)
		}
	})
}
