package validate

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// isStrippedName reports whether the normalized header name is one a
// client must not set: a prefix only the gateway may use (X-Bulwark-*,
// X-Forwarded-*, Proxy-*), forwarding and client-IP claims, URL and method
// overrides that some frameworks honour (they would let a request reach an
// operation other than the one validated), and the hop-by-hop headers of
// RFC 9110 section 7.6.1.
func isStrippedName(n string) bool {
	for _, p := range [...]string{"x-bulwark-", "x-forwarded-", "proxy-"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	switch n {
	case "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
		"x-cluster-client-ip", "x-original-forwarded-for",
		"x-original-url", "x-rewrite-url",
		"x-http-method-override", "x-http-method", "x-method-override",
		"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// SanitizeHeaders removes from h every header a client must not send on to
// an upstream: X-Bulwark-*, X-Forwarded-*, Forwarded, X-Real-IP and other
// client-IP claims, method and URL overrides, Proxy-*, and the hop-by-hop
// headers (Connection and every header it lists, Keep-Alive, TE, Trailer,
// Transfer-Encoding, Upgrade). Names are compared case-insensitively and
// with "_" read as "-" (X_Bulwark_User reaches CGI-style upstreams as
// HTTP_X_BULWARK_USER). It returns the canonical names removed, sorted, so
// the gateway can audit a spoofing attempt; nil when nothing was removed.
func SanitizeHeaders(h http.Header) []string {
	listed := map[string]bool{}
	for name, values := range h {
		if normalizeName(name) != "connection" {
			continue
		}
		for _, v := range values {
			for _, tok := range strings.Split(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					listed[normalizeName(tok)] = true
				}
			}
		}
	}
	var removed []string
	for name := range h {
		n := normalizeName(name)
		if !listed[n] && !isStrippedName(n) {
			continue
		}
		delete(h, name)
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if !slices.Contains(removed, canon) {
			removed = append(removed, canon)
		}
	}
	slices.Sort(removed)
	return removed
}

func normalizeName(name string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), "_", "-")
}

// headerSize counts header fields and their bytes as they appear on the
// wire ("Name: value\r\n").
func headerSize(h http.Header) (count, size int) {
	for name, values := range h {
		for _, v := range values {
			count++
			size += len(name) + len(v) + 4
		}
	}
	return count, size
}
