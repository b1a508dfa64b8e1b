package redact

import "strings"

// authSchemes are HTTP authorization schemes that may start the value of a
// sensitive key; the credentials after them are redacted together with them.
var authSchemes = []string{"bearer", "basic", "digest", "negotiate", "token", "dpop"}

// pairSpans appends to spans the values of key/value pairs in free text whose
// key is sensitive: key=value, key: value, "key":"value", 'key': 'value',
// \"key\":\"value\" (JSON inside a JSON string), and key=[a, b].
//
// A value that already starts with the placeholder is left alone, which keeps
// scrubbing idempotent.
func (r *redactor) pairSpans(s string, spans []span) []span {
	for p := 0; p < len(s); p++ {
		c := s[p]
		if c != '=' && c != ':' {
			continue
		}
		vs := p + 1
		if c == ':' {
			if strings.HasPrefix(s[vs:], "//") { // URL scheme
				continue
			}
			if vs < len(s) && s[vs] == '=' { // Go's :=
				vs++
			}
		}
		key := keyBefore(s, p)
		if key == "" || !r.keys.sensitive(key) {
			continue
		}
		for vs < len(s) && (s[vs] == ' ' || s[vs] == '\t') {
			vs++
		}
		sp, ok := r.valueSpan(s, vs, containsFold(key, "cookie"))
		if !ok {
			continue
		}
		spans = append(spans, sp)
		p = sp.end - 1 // everything up to sp.end is redacted already
	}
	return spans
}

// maxQuotedKey bounds the length of a quoted key looked for before a
// separator.
const maxQuotedKey = 64

// keyBefore returns the key that ends just before the separator at s[p],
// after optional spaces: a quoted key of key characters and spaces
// ("auth header": x), or else a run of letters, digits, '_', '.' and '-',
// optionally followed by a closing quote (plain or backslash-escaped).
func keyBefore(s string, p int) string {
	j := p
	for j > 0 && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	if j > 0 && (s[j-1] == '"' || s[j-1] == '\'') {
		j--
		q := s[j]
		if q == '"' && j > 0 && s[j-1] == '\\' {
			j--
		}
		if k, ok := quotedKey(s, j, q); ok {
			return k
		}
	}
	end := j
	for j > 0 && isKeyChar(s[j-1]) {
		j--
	}
	return s[j:end]
}

// quotedKey returns the text between the quote q that closes a key at or
// just after s[end] and the quote that opens it, if that text is 1 to
// maxQuotedKey key characters and spaces. For an escaped pair (\"key\"),
// s[end] is the backslash and the opening quote is the '"' after its
// backslash, so the key text is the same.
func quotedKey(s string, end int, q byte) (string, bool) {
	for i := end - 1; i >= 0 && end-i <= maxQuotedKey+1; i-- {
		c := s[i]
		if c == q {
			return s[i+1 : end], i+1 < end
		}
		if c != ' ' && !isKeyChar(c) {
			return "", false
		}
	}
	return "", false
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '-'
}

// valueSpan returns the span of the value that starts at s[vs], without its
// quotes. ok is false if there is nothing to redact: no value, an object
// (its own keys are checked separately), or a value that is already the
// placeholder.
func (r *redactor) valueSpan(s string, vs int, toEOL bool) (sp span, ok bool) {
	if vs >= len(s) || strings.HasPrefix(s[vs:], r.placeholder) {
		return span{}, false
	}
	start, end := vs, 0
	switch {
	case s[vs] == '\\' && vs+1 < len(s) && s[vs+1] == '"':
		start = vs + 2
		end = strings.Index(s[start:], `\"`)
		if end < 0 {
			end = len(s)
		} else {
			end += start
		}
	case s[vs] == '"':
		start = vs + 1
		end = closingQuote(s, start)
	case s[vs] == '\'':
		start = vs + 1
		end = strings.IndexByte(s[start:], '\'')
		if end < 0 {
			end = len(s)
		} else {
			end += start
		}
	case s[vs] == '{':
		return span{}, false
	case s[vs] == '[':
		start = vs + 1
		end = closingBracket(s, start)
	default:
		end = unquotedEnd(s, vs, toEOL)
		end = r.extendScheme(s, vs, end, toEOL)
	}
	if end <= start || strings.HasPrefix(s[start:], r.placeholder) {
		return span{}, false
	}
	return span{start, end}, true
}

// closingQuote returns the index of the first '"' at or after i that is not
// escaped by a backslash, or len(s).
func closingQuote(s string, i int) int {
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(s)
}

// closingBracket returns the index of the ']' that closes a '[' just before
// s[i], or len(s).
func closingBracket(s string, i int) int {
	depth := 1
	for ; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return len(s)
}

// unquotedEnd returns the end of an unquoted value starting at s[i].
func unquotedEnd(s string, i int, toEOL bool) int {
	for ; i < len(s); i++ {
		c := s[i]
		if toEOL {
			if c == '\n' || c == '\r' || c == '"' || c == '\'' {
				return i
			}
			continue
		}
		if isValueEnd(c) {
			return i
		}
	}
	return len(s)
}

func isValueEnd(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f', '"', '\'', '`', ',', ';', '&', ')', ']', '}', '>':
		return true
	}
	return false
}

// extendScheme extends a value that is just an authorization scheme
// ("Authorization: Bearer abc") over the credentials that follow it.
func (r *redactor) extendScheme(s string, vs, end int, toEOL bool) int {
	if end-vs > len("negotiate") || end >= len(s) || (s[end] != ' ' && s[end] != '\t') {
		return end
	}
	word := s[vs:end]
	for _, scheme := range authSchemes {
		if len(word) == len(scheme) && containsFold(word, scheme) {
			next := end
			for next < len(s) && (s[next] == ' ' || s[next] == '\t') {
				next++
			}
			if next < len(s) && !isValueEnd(s[next]) {
				return unquotedEnd(s, next, toEOL)
			}
			return end
		}
	}
	return end
}
