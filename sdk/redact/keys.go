package redact

// builtinWords are the sensitive words. Each is matched against a whole word
// of a key, or a run of adjacent whole words ("api key" matches "apiKey",
// "x-api-key" and "APIKEY"), with an optional plural "s".
var builtinWords = []string{
	"password", "passwd", "pwd", "passphrase", "passcode",
	"secret", "token", "authorization", "auth header", "cookie", "session",
	"api key", "access key", "private key", "privkey", "signature key",
	"credential", "creds", "bearer",
	"pan", "card", "card number", "cvv", "cvc", "ssn", "national id", "iban",
	"pin", "otp", "totp", "hotp", "seed",
}

// substringWords are long and distinctive enough to be matched anywhere in a
// key, also inside a word ("dbpassword", "XAPIKey").
var substringWords = []string{
	"password", "passwd", "passphrase", "secret", "credential",
	"authorization", "cookie", "apikey", "privatekey",
}

// metadataWords describe a secret without holding it. A sensitive word
// followed only by these (and digits) does not make a key sensitive:
// "token_type", "password_changed_at", "card_last4". Any other word after the
// sensitive one keeps the key sensitive, so the list fails closed.
var metadataWords = []string{
	"type", "kind", "format", "alg", "algorithm", "scheme", "method", "mode",
	"level", "strength", "policy",
	"expiry", "expires", "expiration", "exp", "expired", "ttl", "lifetime",
	"age", "duration", "in",
	"at", "time", "ts", "date", "created", "updated", "changed", "rotated",
	"issued", "revoked", "reset", "used", "last", "first",
	"count", "total", "len", "length", "size", "attempts", "retries",
	"failures",
	"brand", "network", "issuer", "bin", "masked", "ref", "name", "label",
	"source", "provider", "version", "path", "domain",
	"status", "valid", "verified", "present", "missing", "required",
	"enabled", "decision", "result", "outcome",
	"url", "uri", "endpoint", "audience", "aud", "scope", "scopes", "kid",
	"fingerprint",
}

// keyMatcher decides whether an attribute key names a secret. It is
// immutable after construction and safe for concurrent use.
//
// Sensitive words are kept in a trie over the normalised key, so checking a
// key costs a few steps per byte and no hashing unless a word is found.
type keyMatcher struct {
	nodes    []trieNode // nodes[0] is the root
	metadata map[string]struct{}
}

type trieNode struct {
	next [36]int32 // child index per 'a'..'z', '0'..'9'; 0 means none
	word bool      // a sensitive word ends here
	sub  bool      // a substring word ends here
}

func trieIndex(c byte) int {
	switch {
	case c >= 'a' && c <= 'z':
		return int(c - 'a')
	case c >= '0' && c <= '9':
		return 26 + int(c-'0')
	}
	return -1
}

func newKeyMatcher(extra []string) *keyMatcher {
	m := &keyMatcher{
		nodes:    make([]trieNode, 1, 512),
		metadata: make(map[string]struct{}, len(metadataWords)),
	}
	for _, w := range builtinWords {
		m.insert(w, false)
	}
	for _, w := range extra {
		m.insert(w, false)
	}
	for _, w := range substringWords {
		m.insert(w, true)
	}
	for _, w := range metadataWords {
		m.metadata[w] = struct{}{}
	}
	return m
}

// insert adds the normalised form of w to the trie.
func (m *keyMatcher) insert(w string, sub bool) {
	n := normaliseWord(w)
	if n == "" {
		return
	}
	node := 0
	for i := 0; i < len(n); i++ {
		ci := trieIndex(n[i])
		if ci < 0 { // a non-ASCII letter: such a word cannot be in the trie
			return
		}
		next := m.nodes[node].next[ci]
		if next == 0 {
			m.nodes = append(m.nodes, trieNode{})
			next = int32(len(m.nodes) - 1)
			m.nodes[node].next[ci] = next
		}
		node = int(next)
	}
	if sub {
		m.nodes[node].sub = true
	} else {
		m.nodes[node].word = true
	}
}

// normaliseWord lower-cases w and drops everything that is not a letter or
// digit, the form in which words are compared.
func normaliseWord(w string) string {
	buf, _ := splitKey(w, nil, nil)
	return string(buf)
}

const (
	classSep = iota
	classLower
	classUpper
	classDigit
)

func charClass(c byte) int {
	switch {
	case c >= 'a' && c <= 'z', c >= 0x80:
		return classLower
	case c >= 'A' && c <= 'Z':
		return classUpper
	case c >= '0' && c <= '9':
		return classDigit
	}
	return classSep
}

// splitKey appends the lower-cased letters and digits of key to buf and the
// offset in buf where each word starts to starts. Words break at any other
// byte, at a lower-to-upper case change ("cardNumber"), before the last upper
// of an upper-case run followed by lower case ("APIKey" -> "api", "key"), and
// between letters and digits ("cvv2" -> "cvv", "2"). Bytes of multi-byte
// UTF-8 sequences count as lower-case letters.
func splitKey(key string, buf []byte, starts []int) ([]byte, []int) {
	prev := classSep
	for i := 0; i < len(key); i++ {
		c := key[i]
		cl := charClass(c)
		if cl == classSep {
			prev = classSep
			continue
		}
		boundary := prev == classSep ||
			(cl == classDigit) != (prev == classDigit) ||
			(cl == classUpper && prev == classLower) ||
			(cl == classUpper && prev == classUpper && humpFollows(key, i))
		if boundary {
			starts = append(starts, len(buf))
		}
		if cl == classUpper {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
		prev = cl
	}
	return buf, starts
}

// humpFollows reports whether the upper-case letter at key[i], which follows
// another upper-case letter, starts a new camelCase word: it is followed by a
// lower-case run other than a lone plural "s" ("APIKey" yes, "IDs" no).
func humpFollows(key string, i int) bool {
	if i+1 >= len(key) || charClass(key[i+1]) != classLower {
		return false
	}
	if key[i+1] == 's' && (i+2 == len(key) || charClass(key[i+2]) != classLower) {
		return false
	}
	return true
}

// sensitive reports whether key names a secret: a sensitive word (or a
// plural of one) spans whole words of the key, or a substring word appears
// anywhere in it, and the words after it are not all metadata words.
func (m *keyMatcher) sensitive(key string) bool {
	if key == "" {
		return false
	}
	var bufArr [64]byte
	var startArr [16]int
	buf, starts := splitKey(key, bufArr[:0], startArr[:0])
	if len(starts) == 0 {
		return false
	}
	var exemptArr [16]bool
	var exempt []bool // computed on the first match
	fires := func(end int) bool {
		if exempt == nil {
			exempt = m.exemptWords(buf, starts, exemptArr[:0])
		}
		j := len(starts) - 1
		for starts[j] > end-1 {
			j--
		}
		return !exempt[j]
	}
	seg := 0
	for i := range buf {
		for seg+1 < len(starts) && starts[seg+1] <= i {
			seg++
		}
		atStart := starts[seg] == i
		node := 0
		for e := i; e < len(buf); e++ {
			ci := trieIndex(buf[e])
			if ci < 0 {
				break
			}
			next := m.nodes[node].next[ci]
			if next == 0 {
				break
			}
			node = int(next)
			nd := &m.nodes[node]
			end := e + 1
			if nd.sub && fires(end) {
				return true
			}
			if nd.word && atStart {
				if isWordEnd(buf, starts, end) && fires(end) {
					return true
				}
				if end < len(buf) && buf[end] == 's' && isWordEnd(buf, starts, end+1) && fires(end+1) {
					return true
				}
			}
		}
	}
	return false
}

// isWordEnd reports whether a word of the key ends at buf[end].
func isWordEnd(buf []byte, starts []int, end int) bool {
	if end == len(buf) {
		return true
	}
	for _, s := range starts {
		if s == end {
			return true
		}
	}
	return false
}

// exemptWords returns, in dst, for each word j of the key whether the words
// after it are all metadata words or digits, with at least one metadata
// word: then a sensitive word ending in word j does not make the key
// sensitive ("token_type", "card_last4").
func (m *keyMatcher) exemptWords(buf []byte, starts []int, dst []bool) []bool {
	n := len(starts)
	if cap(dst) < n {
		dst = make([]bool, n)
	}
	dst = dst[:n]
	allMeta, anyMeta := true, false
	for j := n - 1; j >= 0; j-- {
		dst[j] = allMeta && anyMeta
		end := len(buf)
		if j+1 < n {
			end = starts[j+1]
		}
		w := buf[starts[j]:end]
		_, meta := m.metadata[string(w)]
		allMeta = allMeta && (meta || isDigits(w))
		anyMeta = anyMeta || meta
	}
	return dst
}

func isDigits(w []byte) bool {
	for _, c := range w {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(w) > 0
}
