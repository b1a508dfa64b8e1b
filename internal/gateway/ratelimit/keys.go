package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
)

// KeyFunc returns the rate-limit key of a request. An error (or an empty
// key) makes the middleware refuse the request.
type KeyFunc func(*http.Request) (string, error)

// ClientKey is the key of an OAuth client.
func ClientKey(clientID string) string { return "client:" + clientID }

// UserKey is the key of an end user (a token's subject).
func UserKey(subject string) string { return "user:" + subject }

// IPKey is the key of a source address. IPv4-mapped IPv6 addresses count
// as IPv4, zones are dropped, and IPv6 addresses are grouped by /64 (the
// smallest prefix routed to one host), so one host cannot escape its limit
// by rotating addresses. The zero Addr has the key "ip:invalid".
func IPKey(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	switch {
	case !addr.IsValid():
		return "ip:invalid"
	case addr.Is4():
		return "ip4:" + addr.String()
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return "ip:invalid"
	}
	return "ip6:" + p.String()
}

// IPKeyFromRemoteAddr parses an http.Request's RemoteAddr ("host:port" or
// a bare address) into IPKey.
func IPKeyFromRemoteAddr(remoteAddr string) (string, error) {
	host := remoteAddr
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("rate limit: remote address: %w", err)
	}
	return IPKey(addr), nil
}

// ByRemoteIP keys requests by the connection's source address. It never
// trusts X-Forwarded-For: at the edge that header is the client's to forge.
func ByRemoteIP(r *http.Request) (string, error) {
	return IPKeyFromRemoteAddr(r.RemoteAddr)
}
