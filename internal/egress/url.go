package egress

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// CheckURL validates rawURL before anything is fetched: the scheme must be
// allowed, the URL must carry no credentials and must name a host, and a
// host that is an IP address (in any form a resolver accepts, including
// the decimal, octal and hexadecimal IPv4 forms of inet_aton such as
// 2130706433 or 0x7f.1) must be a permitted address. Host names must be
// ASCII (IDNs in their xn-- form) and are
// resolved and checked again when connecting; CheckURL does no DNS.
// A refusal is a *BlockedError.
func (g *Guard) CheckURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return g.block(rawURL, netip.Addr{}, ReasonBadURL)
	}
	return g.checkParsed(u)
}

func (g *Guard) checkParsed(u *url.URL) error {
	host := u.Hostname()
	if _, ok := g.schemes[strings.ToLower(u.Scheme)]; !ok {
		return g.block(host, netip.Addr{}, ReasonScheme)
	}
	if u.User != nil {
		return g.block(host, netip.Addr{}, ReasonUserinfo)
	}
	if u.Opaque != "" || host == "" {
		return g.block(host, netip.Addr{}, ReasonNoHost)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return g.block(host, netip.Addr{}, ReasonBadURL)
		}
	}
	for i := 0; i < len(host); i++ {
		// net/http maps Unicode host names through IDNA before dialling
		// (fullwidth digits and ideographic full stops become an IP
		// literal), so refuse them here rather than judge a different
		// string than the one dialled.
		if host[i] >= 0x80 {
			return g.block(host, netip.Addr{}, ReasonNonASCIIHost)
		}
	}
	addr, canonical, numeric, ok := parseHostIP(host)
	switch {
	case numeric && !ok:
		return g.block(host, netip.Addr{}, ReasonBadIPLiteral)
	case ok:
		if err := g.CheckAddr(host, addr); err != nil {
			return err
		}
		if !canonical {
			return g.block(host, addr, ReasonNonCanonical)
		}
		return nil
	}
	if _, allowed := g.allowHosts[normalizeHost(host)]; allowed {
		return nil
	}
	if n := normalizeHost(host); n == "localhost" || strings.HasSuffix(n, ".localhost") {
		return g.block(host, netip.Addr{}, ReasonLocalhostName)
	}
	return nil
}

// parseHostIP recognises host as an IP address. numeric reports that host
// is meant as an IPv4 address (its last label is a number, the WHATWG URL
// rule); ok that it parsed, to addr; canonical that it is in the standard
// dotted-quad or IPv6 form that every parser reads the same way.
func parseHostIP(host string) (addr netip.Addr, canonical, numeric, ok bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true, true, true
	}
	if strings.Contains(host, ":") {
		// Not a valid IPv6 literal; url.Parse does not produce these for
		// bracketed hosts, and a colon is never part of a host name.
		return netip.Addr{}, false, true, false
	}
	h := strings.TrimSuffix(host, ".")
	labels := strings.Split(h, ".")
	if !isNumberLabel(labels[len(labels)-1]) {
		return netip.Addr{}, false, false, false
	}
	a, ok := parseInetAton(labels)
	return a, false, true, ok
}

// isNumberLabel reports whether s is a decimal, octal or 0x-hexadecimal
// number as inet_aton reads it.
func isNumberLabel(s string) bool {
	if s == "" {
		return false
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		for i := 2; i < len(s); i++ {
			if !isHex(s[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// parseInetAton parses 1 to 4 numeric parts the way inet_aton (and so
// getaddrinfo) does: a, a.b (8.24 bits), a.b.c (8.8.16) or a.b.c.d, each
// part decimal, octal with a leading 0, or hexadecimal with 0x.
func parseInetAton(parts []string) (netip.Addr, bool) {
	if len(parts) < 1 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, ok := parseAtonPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	last := len(vals) - 1
	for _, v := range vals[:last] {
		if v > 0xff {
			return netip.Addr{}, false
		}
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	var n uint64
	for i, v := range vals[:last] {
		n |= v << (8 * (3 - i))
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

func parseAtonPart(p string) (uint64, bool) {
	base, digits := 10, p
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, digits = 16, p[2:]
		if digits == "" {
			return 0, true // inet_aton reads "0x" as 0
		}
	case len(p) > 1 && p[0] == '0':
		base, digits = 8, p[1:]
	}
	if digits == "" || len(digits) > 32 {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, base, 64)
	if err != nil || v > 0xffffffff {
		return 0, false
	}
	return v, true
}
