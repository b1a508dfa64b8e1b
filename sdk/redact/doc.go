// Package redact provides a [log/slog] handler that removes secrets from log
// records before they reach the wrapped handler. Every Bulwark process logs
// through it; services built on the Bulwark SDK should too.
//
// # Usage
//
//	logger := redact.NewJSONLogger(os.Stderr, slog.LevelInfo, nil)
//	logger.Info("login", "user", "alice", "password", pw) // password=[REDACTED]
//
// or wrap any handler:
//
//	h := redact.NewHandler(slog.NewTextHandler(os.Stderr, nil), &redact.Options{
//		ExtraKeys: []string{"merchant_ref"},
//	})
//
// # Removal by key
//
// An attribute whose key names a secret has its value replaced by the
// placeholder ([DefaultPlaceholder] unless [Options.Placeholder] is set).
// Keys are split into words at '_', '-', '.', spaces and other punctuation, at
// camelCase humps and at letter/digit boundaries, and compared without case,
// so "Password", "db_password", "x-api-key", "privateKey", "client_secret",
// "Authorization", "set-cookie" and "cardNumber" all match. A sensitive word
// must be a whole word or a run of whole words of the key ("pan" matches
// "card_pan" and "PAN" but not "company" or "span"); a few long, distinctive
// words (password, passwd, passphrase, secret, credential, authorization,
// cookie, apikey, privatekey) also match inside a word ("dbpassword").
// A trailing plural "s" is ignored ("tokens", "cookies").
//
// The built-in words are: password, passwd, pwd, passphrase, passcode,
// secret, token, authorization, auth header, cookie, session, api key,
// access key, private key, privkey, signature key, credential, creds, bearer,
// pan, card, card number, cvv, cvc, ssn, national id, iban, pin, otp, totp,
// hotp and seed. [Options.ExtraKeys] adds more.
//
// A key is not sensitive when the sensitive word is followed only by words
// that describe the secret rather than hold it — "token_type",
// "tokens_total", "password_changed_at", "card_brand", "card_last4",
// "secret_name", "session_count", "authorization_decision", "expires_in".
// tokens_total is therefore logged: it counts tokens. Any other word
// after it keeps the key sensitive ("session_id", "password_new",
// "api_key_id"), so an unknown suffix fails closed. The full list of such
// metadata words is in keys.go.
//
// Bool, time.Duration and time.Time values are kept under sensitive keys:
// they cannot carry a credential, and "token_expired=true" or
// "password_changed_at" are what operators need to see. Every other kind,
// including numbers (PINs, OTPs, card numbers), is replaced. A group whose
// key is sensitive keeps its structure but has every value in it redacted; the
// same holds for all attributes logged under a sensitive group name opened
// with [slog.Logger.WithGroup].
//
// # Removal by value
//
// Whatever the key, every string the handler sees — the record message,
// string attribute values, attribute keys, and the text of values described
// under "Other values" below — is scanned for substrings that look like
// secrets, and each is replaced by the placeholder while the text around it
// stays:
//
//   - JWT/JWS/JWE compact serialisations: a base64url segment starting with
//     "eyJ" followed by two or four more dot-separated segments;
//   - "Bearer <token>" and "Basic <credentials>" (any case); the token is
//     replaced and the scheme kept. A plain word of at most 14 letters after
//     the scheme ("basic auth", "Bearer Token") is prose and stays, as does a
//     key=value pair ("token_type=Bearer expires_in=300");
//   - PEM private key blocks, "-----BEGIN ... PRIVATE KEY-----" through the
//     matching END line; a block with no END line is redacted to the end of
//     the string;
//   - payment card numbers: 13 to 19 digits that pass the Luhn check, either
//     contiguous or in groups of at least three digits separated by single
//     spaces or dashes ("4111 1111 1111 1111", "3782-822463-10005"); a run of
//     more than 19 contiguous digits is not a card number, and non-Luhn runs
//     (order IDs, timestamps) stay;
//   - key/value pairs in free text whose key is sensitive, written as
//     key=value, key: value, "key":"value", 'key': 'value' or with
//     JSON-escaped quotes; a quoted value is redacted up to its closing quote,
//     an unquoted one up to whitespace or one of , ; & ) ] } > " ' and, for
//     cookie keys, up to the end of the line. An HTTP authorization scheme
//     after the key ("Authorization: Bearer x") is redacted with its
//     credentials;
//   - the password in a URL's userinfo ("postgres://app:s3cret@db:5432"),
//     also when it holds unescaped '@', '?' or '#' (but not '/' or quotes);
//   - Bulwark credentials: "bwk_" followed by 20 or more base64url characters.
//
// Free-text matching errs towards redaction: "verify token: expired" becomes
// "verify token: [REDACTED]" because "token" is a sensitive key.
//
// Removing one secret can expose another to the rules (a pair whose removal
// completes a URL's userinfo, say), so a string in which something was
// replaced is scanned again until nothing changes. Strings with nothing to
// redact are scanned once, and cheap checks (length, the presence of '=',
// ':', "eyJ", "-----BEGIN", "bwk_", enough digits) decide which rules run at
// all.
//
// Int64 and Uint64 values of 13 to 19 digits that pass the Luhn check are
// replaced too, whatever their key, since a card number stored in an integer
// is still a card number.
//
// # Other values
//
// Values implementing [slog.LogValuer] are resolved first with
// [slog.Value.Resolve], which bounds the number of calls and recovers panics,
// and the resolved value is inspected and passed on. Groups are walked to any
// depth up to 32 levels; deeper values are replaced.
//
// A value of [slog.KindAny] is never passed on as it is, because the wrapped
// handler may render it in a way that the redactor did not inspect (the JSON
// handler marshals struct fields, the text handler calls String or Format).
// Instead the handler renders it once and passes on exactly what it checked:
//
//   - an error becomes a string: its Error text, scrubbed;
//   - a []byte becomes a string: its bytes as text, scrubbed (the JSON
//     handler would otherwise have written base64);
//   - a [fmt.Stringer] becomes a string: its String text, scrubbed;
//   - anything else is marshalled with encoding/json and decoded again into
//     maps, slices, strings, json.Number, bools and nils; map keys that are
//     sensitive have their values redacted, strings are scrubbed, and numbers
//     that look like card numbers are replaced. The JSON handler therefore
//     still logs a struct or map as a JSON object. A value that cannot be
//     marshalled becomes its fmt "%+v" text, scrubbed.
//
// Nil values are passed on unchanged. A panic in Error or String yields the
// placeholder; a value whose MarshalJSON fails or panics is rendered with
// "%+v" (where "Field:value" pairs with sensitive field names are still
// caught by the free-text rules).
//
// # Guarantees and limits
//
// Scrubbing a string twice gives the same result as scrubbing it once, for
// the default placeholder and for any placeholder that starts and ends with
// punctuation and contains no digits, quotes, '=' or ':'. Redaction is a
// safety net, not a substitute for not logging secrets: a password under an
// innocuous key such as "value" with no recognisable shape is not found, and
// likewise inside values of kind Any, whose fields are known only by their
// JSON names.
//
// The handler caches what it learns about up to 4096 distinct attribute keys
// per [NewHandler] call; that cache is its only mutable state.
package redact
