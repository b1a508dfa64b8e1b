package dpop

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// normalizeURL returns the form of an http(s) URL that htu is compared in
// (RFC 9449 §4.3, RFC 3986 §6.2.2 and §6.2.3): lower-case scheme and host,
// no default port, an empty path as "/", percent-encodings in upper case
// and unreserved characters decoded; query and fragment dropped.
func normalizeURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a valid URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", errors.New("not an http or https URL")
	}
	if u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", errors.New("not an absolute URL with a host")
	}
	host := strings.ToLower(u.Host)
	if h, port, err := net.SplitHostPort(host); err == nil {
		if port == "" || scheme == "https" && port == "443" || scheme == "http" && port == "80" {
			host = h
			if strings.Contains(h, ":") {
				host = "[" + h + "]"
			}
		}
	}
	path, err := normalizePath(u.EscapedPath())
	if err != nil {
		return "", err
	}
	return scheme + "://" + host + path, nil
}

// normalizePath decodes percent-encoded unreserved characters and upper-
// cases the hex digits of the others.
func normalizePath(p string) (string, error) {
	if p == "" {
		return "/", nil
	}
	if !strings.Contains(p, "%") {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", errors.New("bad percent-encoding in the path")
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			b.WriteByte('%')
			b.WriteByte(upperHex[v>>4])
			b.WriteByte(upperHex[v&15])
		}
		i += 2
	}
	return b.String(), nil
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
