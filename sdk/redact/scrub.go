package redact

import (
	"regexp"
	"strings"
)

// Patterns, compiled once. Each is only run when a cheap test on the string
// (see scrub) shows it could match.
var (
	// JWS has three segments, JWE five; the header is base64url JSON and so
	// starts with "eyJ" ('{"'). Later segments may be empty (unsecured JWS,
	// detached payload, JWE direct key agreement).
	jwtRe = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?`)

	// RFC 7235 token68 after an HTTP authorization scheme.
	authSchemeRe = regexp.MustCompile(`(?i)(?:bearer|basic)[ \t]+([A-Za-z0-9\-._~+/]+=*)`)

	// A PEM private key block, up to its END line or the end of the text.
	pemRe = regexp.MustCompile(`-----BEGIN[ A-Z0-9]*PRIVATE KEY[ A-Z0-9]*-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY[ A-Z0-9]*-----|$)`)

	// Bulwark's own credential format.
	bulwarkRe = regexp.MustCompile(`bwk_[A-Za-z0-9_-]{20,}`)

	// The password in a URL's userinfo. The greedy group runs to the last
	// '@' before the path, so that unescaped '@', '?' and '#' in passwords
	// are covered; a password containing '/' is not found.
	urlPasswordRe = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*:([^\s/"']*)@`)
)

// minSecretLen is the length of the shortest string any rule can match
// ("pin=1").
const minSecretLen = 5

// Byte classes for the pre-scan in scrub.
const (
	bDigit = 1 << iota
	bSep   // '=' or ':'
	bDot
	bAt
	bDash
	bUnderscore
	bLetterB
	bSpace
)

var byteClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = bDigit
	}
	t['='], t[':'] = bSep, bSep
	t['.'] = bDot
	t['@'] = bAt
	t['-'] = bDash
	t['_'] = bUnderscore
	t['b'], t['B'] = bLetterB, bLetterB
	t[' '] = bSpace
	return t
}()

// span is a half-open byte range [start, end) of a string to be replaced.
type span struct{ start, end int }

// redactor holds the rules shared by a Handler and everything derived from
// it. It is immutable.
type redactor struct {
	keys        *keyMatcher
	placeholder string
}

func newRedactor(extraKeys []string, placeholder string) *redactor {
	return &redactor{keys: newKeyMatcher(extraKeys), placeholder: placeholder}
}

var defaultRedactor = newRedactor(nil, DefaultPlaceholder)

// String returns s with every substring that looks like a secret replaced by
// [DefaultPlaceholder], using the built-in rules described in the package
// documentation. It is what the handler applies to the record message and to
// every string value. Applying String twice gives the same result as applying
// it once.
func String(s string) string {
	out, _ := defaultRedactor.scrub(s)
	return out
}

// maxPasses bounds the passes scrub makes over a string.
const maxPasses = 8

// scrub returns s with secrets replaced by the placeholder, and whether
// anything was replaced.
//
// Replacing a secret can reveal another: removing "pwd=x" from a URL's
// userinfo lets the URL rule see the password, for example. So when a pass
// replaced something, scrub passes over the result again until nothing
// changes (in practice one extra pass); this is what makes scrubbing
// idempotent. Strings without secrets get a single pass.
func (r *redactor) scrub(s string) (string, bool) {
	out, changed := r.scrubOnce(s)
	if !changed {
		return s, false
	}
	for range maxPasses - 1 {
		next, ch := r.scrubOnce(out)
		if !ch {
			break
		}
		out = next
	}
	return out, true
}

// scrubOnce makes one pass of scrub.
func (r *redactor) scrubOnce(s string) (string, bool) {
	if len(s) < minSecretLen {
		return s, false
	}
	// One pass over the bytes finds which rules can match. digits is an
	// upper bound on the digits of any card number candidate: digits seen
	// since the last byte that is not a digit, space or dash.
	var seen uint8
	run, digits := 0, 0
	for i := 0; i < len(s); i++ {
		c := byteClass[s[i]]
		seen |= c
		switch {
		case c&bDigit != 0:
			run++
			digits = max(digits, run)
		case c&(bDash|bSpace) == 0:
			run = 0
		}
	}

	var spanArr [8]span
	spans := spanArr[:0]
	if seen&bDot != 0 && strings.Contains(s, "eyJ") {
		for _, m := range jwtRe.FindAllStringIndex(s, -1) {
			spans = append(spans, span{m[0], m[1]})
		}
	}
	if seen&bDash != 0 && strings.Contains(s, "-----BEGIN") {
		for _, m := range pemRe.FindAllStringIndex(s, -1) {
			spans = append(spans, span{m[0], m[1]})
		}
	}
	if seen&bUnderscore != 0 && strings.Contains(s, "bwk_") {
		for _, m := range bulwarkRe.FindAllStringIndex(s, -1) {
			spans = append(spans, span{m[0], m[1]})
		}
	}
	if seen&bAt != 0 && seen&bSep != 0 && strings.Contains(s, "://") {
		for _, m := range urlPasswordRe.FindAllStringSubmatchIndex(s, -1) {
			if m[3] > m[2] && !strings.HasPrefix(s[m[2]:], r.placeholder) {
				spans = append(spans, span{m[2], m[3]})
			}
		}
	}
	if seen&bSep != 0 {
		spans = r.pairSpans(s, spans)
	}
	// Cards and authorization credentials are looked for last, in the text
	// outside what is already redacted, so that a second pass, which sees
	// placeholders there, makes the same decisions.
	if digits >= minCardDigits {
		spans = mergeSpans(spans)
		spans = cardSpans(s, spans, spans)
	}
	if seen&bLetterB != 0 && (containsFold(s, "bearer") || containsFold(s, "basic")) {
		spans = mergeSpans(spans)
		spans = r.authSpans(s, spans, spans)
	}
	if len(spans) == 0 {
		return s, false
	}
	spans = mergeSpans(spans)

	var b strings.Builder
	b.Grow(len(s) + len(spans)*len(r.placeholder))
	prev := 0
	for _, sp := range spans {
		b.WriteString(s[prev:sp.start])
		b.WriteString(r.placeholder)
		prev = sp.end
	}
	b.WriteString(s[prev:])
	out := b.String()
	return out, out != s
}

// mergeSpans sorts spans by start and merges overlapping and adjacent ones,
// in place.
func mergeSpans(spans []span) []span {
	if len(spans) < 2 {
		return spans
	}
	for i := 1; i < len(spans); i++ { // insertion sort: spans are few
		for j := i; j > 0 && spans[j].start < spans[j-1].start; j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
	out := spans[:1]
	for _, sp := range spans[1:] {
		last := &out[len(out)-1]
		if sp.start <= last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		out = append(out, sp)
	}
	return out
}

// authSpans appends to out the credentials after "Bearer" and "Basic" in s.
// skip holds sorted, disjoint spans already marked for redaction: a scheme
// word that overlaps one is ignored and a credential ends where one starts.
// When the word after the scheme is not a credential the search resumes at
// that word, since it may itself be a scheme ("Bearer Bearer abc").
func (r *redactor) authSpans(s string, skip, out []span) []span {
	for off := 0; off < len(s); {
		m := authSchemeRe.FindStringSubmatchIndex(s[off:])
		if m == nil {
			break
		}
		schemeStart, start, end := off+m[0], off+m[2], off+m[3]
		next := byte(' ') // the byte after the credential; ' ' at the end
		if end < len(s) {
			next = s[end]
		}
		clamped := false
		for _, sk := range skip {
			if sk.end <= schemeStart || sk.start > end {
				continue
			}
			if sk.start < start { // the scheme or the space after it is redacted
				end = -1
			} else {
				clamped = clamped || sk.start < end
				end, next = sk.start, r.placeholder[0]
			}
			break
		}
		switch {
		case end < 0:
			off = schemeStart + 1
		case end <= start:
			off = start
		case isPlainWord(s[start:end]), !clamped && isPair(s[start:end], next):
			// Prose ("basic auth"), or a key=value pair after the scheme
			// word ("token_type=Bearer expires_in=300").
			off = start
		default:
			out = append(out, span{start, end})
			off = end
		}
	}
	return out
}

// isPlainWord reports whether the text after an authorization scheme is an
// ordinary word ("auth", "Token") rather than a credential: at most 14
// letters, all lower case or capitalised.
func isPlainWord(w string) bool {
	if len(w) == 0 || len(w) > 14 {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z':
		case c >= 'A' && c <= 'Z' && i == 0:
		default:
			return false
		}
	}
	return true
}

// isPair reports whether tok, the text after an authorization scheme, and
// the byte after it are the start of a key=value pair rather than padded
// credentials: tok is key characters and a single trailing '=', and a value
// follows.
func isPair(tok string, next byte) bool {
	n := len(tok)
	if n < 2 || tok[n-1] != '=' || isValueEnd(next) {
		return false
	}
	for i := 0; i < n-1; i++ {
		if !isKeyChar(tok[i]) {
			return false
		}
	}
	return true
}

// containsFold reports whether s contains the lower-case ASCII word sub,
// ignoring ASCII case in s.
func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if lower(s[i]) != sub[0] {
			continue
		}
		j := 1
		for j < n && lower(s[i+j]) == sub[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
