package egress

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, reason string
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"172.15.255.255", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"2606:4700:4700::1111", ""},
		{"2001:200::1", ""},
		{"127.0.0.1", ReasonLoopback},
		{"127.255.255.254", ReasonLoopback},
		{"::1", ReasonLoopback},
		{"0.0.0.0", ReasonUnspecified},
		{"::", ReasonUnspecified},
		{"169.254.169.254", ReasonMetadata},
		{"169.254.170.2", ReasonMetadata},
		{"fd00:ec2::254", ReasonMetadata},
		{"::ffff:169.254.169.254", ReasonMetadata},
		{"64:ff9b::169.254.169.254", ReasonMetadata},
		{"169.254.0.1", ReasonLinkLocal},
		{"fe80::1", ReasonLinkLocal},
		{"fe80::1%eth0", ReasonLinkLocal},
		{"10.255.255.255", ReasonPrivate},
		{"192.168.0.1", ReasonPrivate},
		{"fd12:3456::1", ReasonPrivate},
		{"100.64.0.0", ReasonSharedCGNAT},
		{"100.127.255.255", ReasonSharedCGNAT},
		{"224.0.0.251", ReasonMulticast},
		{"ff05::1:3", ReasonMulticast},
		{"255.255.255.255", ReasonBroadcast},
		{"0.255.0.1", ReasonThisNetwork},
		{"198.18.5.5", ReasonBenchmarking},
		{"240.0.0.1", ReasonReserved},
		{"::ffff:127.0.0.1", ReasonLoopback},
		{"::ffff:10.0.0.1", ReasonPrivate},
		{"::127.0.0.1", ReasonIPv4Compat},
		{"::8.8.8.8", ReasonIPv4Compat},
		{"64:ff9b::127.0.0.1", ReasonLoopback},
		{"64:ff9b::8.8.8.8", ""},
		{"64:ff9b:1::1", ReasonNAT64Local},
		{"2002:7f00:1::", ReasonLoopback},
		{"2002:c0a8:101::1", ReasonPrivate},
		{"2002:808:808::1", ""},
		{"2001::1", ReasonTeredo},
		{"2001:db8::1", ReasonDocumentation},
		{"100::1", ReasonDiscard},
		{"fec0::1", ReasonSiteLocal},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			if got := classify(netip.MustParseAddr(tc.addr)); got != tc.reason {
				t.Errorf("classify(%s) = %q, want %q", tc.addr, got, tc.reason)
			}
		})
	}
}

func TestParseInetAton(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want string // "" means not parsed
	}{
		{"2130706433", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0177.0.0.01", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"10.0x10000", "10.1.0.0"},
		{"0xFFFFFFFF", "255.255.255.255"},
		{"0", "0.0.0.0"},
		{"0x100000000", ""},
		{"1.0x1000000", ""},
		{"256.1", ""},
		{"08", ""},
		{"1.2.3.4.5", ""},
		{"1..2", ""},
		{"127.0.0.1.", "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			addr, _, numeric, ok := parseHostIP(tc.host)
			if !numeric {
				t.Fatalf("parseHostIP(%q) not numeric", tc.host)
			}
			if tc.want == "" {
				if ok {
					t.Fatalf("parseHostIP(%q) = %v, want failure", tc.host, addr)
				}
				return
			}
			if !ok || addr != netip.MustParseAddr(tc.want) {
				t.Fatalf("parseHostIP(%q) = %v %v, want %s", tc.host, addr, ok, tc.want)
			}
		})
	}
}
