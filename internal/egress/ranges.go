package egress

import "net/netip"

// Reasons reported in BlockedError.Reason. They are stable strings that
// audit consumers may match on.
const (
	ReasonScheme        = "scheme not allowed"
	ReasonUserinfo      = "credentials in URL"
	ReasonNoHost        = "URL has no host"
	ReasonBadURL        = "malformed URL"
	ReasonBadIPLiteral  = "malformed numeric host"
	ReasonNonCanonical  = "non-canonical IPv4 literal"
	ReasonLocalhostName = "localhost name"
	ReasonNonASCIIHost  = "non-ASCII host name (use its xn-- form)"
	ReasonNetwork       = "network not allowed"
	ReasonRedirects     = "too many redirects"
	ReasonMetadata      = "cloud metadata address"
	ReasonLoopback      = "loopback address"
	ReasonUnspecified   = "unspecified address"
	ReasonLinkLocal     = "link-local address"
	ReasonPrivate       = "private address"
	ReasonSharedCGNAT   = "shared address space (CGNAT)"
	ReasonMulticast     = "multicast address"
	ReasonBroadcast     = "broadcast address"
	ReasonThisNetwork   = "this-network address (0.0.0.0/8)"
	ReasonBenchmarking  = "benchmarking address"
	ReasonReserved      = "reserved address"
	ReasonDocumentation = "documentation address"
	ReasonProtocol      = "IETF protocol assignment"
	ReasonIPv4Compat    = "deprecated IPv4-compatible IPv6 address"
	ReasonTeredo        = "Teredo address"
	ReasonNAT64Local    = "local-use NAT64 address"
	ReasonDiscard       = "discard-only address"
	ReasonSiteLocal     = "deprecated site-local address"
)

type blockedRange struct {
	prefix netip.Prefix
	reason string
}

// metadataAddrs are the instance-metadata endpoints of the major clouds.
// They are refused even for hosts named in Config.AllowHosts; only an
// explicit Config.Allow prefix lets them through.
var metadataAddrs = [...]netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, DigitalOcean
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud
}

// v4Blocked lists the IPv4 ranges that are never a legitimate public
// destination. The order matters only for the reason reported: the more
// specific entry comes first.
var v4Blocked = [...]blockedRange{
	{netip.MustParsePrefix("255.255.255.255/32"), ReasonBroadcast},
	{netip.MustParsePrefix("0.0.0.0/32"), ReasonUnspecified},
	{netip.MustParsePrefix("0.0.0.0/8"), ReasonThisNetwork},
	{netip.MustParsePrefix("10.0.0.0/8"), ReasonPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), ReasonSharedCGNAT},
	{netip.MustParsePrefix("127.0.0.0/8"), ReasonLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), ReasonLinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), ReasonPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), ReasonProtocol},
	{netip.MustParsePrefix("192.0.2.0/24"), ReasonDocumentation},
	{netip.MustParsePrefix("192.88.99.0/24"), ReasonReserved}, // former 6to4 relay anycast
	{netip.MustParsePrefix("192.168.0.0/16"), ReasonPrivate},
	{netip.MustParsePrefix("198.18.0.0/15"), ReasonBenchmarking},
	{netip.MustParsePrefix("198.51.100.0/24"), ReasonDocumentation},
	{netip.MustParsePrefix("203.0.113.0/24"), ReasonDocumentation},
	{netip.MustParsePrefix("224.0.0.0/4"), ReasonMulticast},
	{netip.MustParsePrefix("240.0.0.0/4"), ReasonReserved},
}

// v6Blocked lists the IPv6 ranges that are refused outright. Ranges that
// embed an IPv4 address (IPv4-mapped, NAT64, 6to4) are handled in
// classify by checking the embedded address instead.
var v6Blocked = [...]blockedRange{
	{netip.MustParsePrefix("::/128"), ReasonUnspecified},
	{netip.MustParsePrefix("::1/128"), ReasonLoopback},
	{netip.MustParsePrefix("::/96"), ReasonIPv4Compat},
	{netip.MustParsePrefix("64:ff9b:1::/48"), ReasonNAT64Local},
	{netip.MustParsePrefix("100::/64"), ReasonDiscard},
	{netip.MustParsePrefix("2001::/32"), ReasonTeredo},
	{netip.MustParsePrefix("2001::/23"), ReasonProtocol},
	{netip.MustParsePrefix("2001:db8::/32"), ReasonDocumentation},
	{netip.MustParsePrefix("3fff::/20"), ReasonDocumentation},
	{netip.MustParsePrefix("fc00::/7"), ReasonPrivate},
	{netip.MustParsePrefix("fe80::/10"), ReasonLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), ReasonSiteLocal},
	{netip.MustParsePrefix("ff00::/8"), ReasonMulticast},
}

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// classify reports why addr is not a public destination, or "" if it is.
// Embedded IPv4 addresses (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96,
// 6to4 2002::/16) are judged by the IPv4 address they carry.
func classify(addr netip.Addr) string {
	addr = addr.WithZone("")
	for _, m := range metadataAddrs {
		if addr.Unmap() == m {
			return ReasonMetadata
		}
	}
	if addr.Is4In6() {
		addr = addr.Unmap()
	}
	if addr.Is4() {
		for _, r := range v4Blocked {
			if r.prefix.Contains(addr) {
				return r.reason
			}
		}
		return ""
	}
	if !addr.Is6() {
		return ReasonBadIPLiteral
	}
	b := addr.As16()
	if nat64Prefix.Contains(addr) {
		return classify(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	if sixToFour.Contains(addr) {
		return classify(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	}
	for _, r := range v6Blocked {
		if r.prefix.Contains(addr) {
			return r.reason
		}
	}
	return ""
}
