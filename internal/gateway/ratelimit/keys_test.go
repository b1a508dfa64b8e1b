package ratelimit

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestIPKeyFromRemoteAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, remote, want string
		wantErr            bool
	}{
		{"ipv4 with port", "192.0.2.7:5555", "ip4:192.0.2.7", false},
		{"ipv4 bare", "192.0.2.7", "ip4:192.0.2.7", false},
		{"ipv4-mapped ipv6 counts as ipv4", "[::ffff:192.0.2.7]:80", "ip4:192.0.2.7", false},
		{"ipv6 grouped by /64", "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", "ip6:2001:db8:1:2::/64", false},
		{"ipv6 other host same /64", "[2001:db8:1:2::1]:1", "ip6:2001:db8:1:2::/64", false},
		{"ipv6 next /64", "[2001:db8:1:3::1]:1", "ip6:2001:db8:1:3::/64", false},
		{"ipv6 zone dropped", "[fe80::1%eth0]:1", "ip6:fe80::/64", false},
		{"loopback v6", "[::1]:8080", "ip6:::/64", false},
		{"empty", "", "", true},
		{"hostname", "example.com:80", "", true},
		{"garbage", "not an address", "", true},
		{"forged header style list", "1.2.3.4, 5.6.7.8", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := IPKeyFromRemoteAddr(tt.remote)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("IPKeyFromRemoteAddr(%q) = %q, %v; want %q, err=%v", tt.remote, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestKeysDoNotCollide(t *testing.T) {
	t.Parallel()
	keys := []string{ClientKey("x"), UserKey("x"), IPKey(netip.MustParseAddr("10.0.0.1")), ClientKey("user:x")}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Fatalf("key %q produced twice", k)
		}
		seen[k] = true
	}
	if got := IPKey(netip.Addr{}); got != "ip:invalid" {
		t.Fatalf("IPKey(zero) = %q", got)
	}
}

// Attack: one IPv6 host rotates through addresses of its /64, and a client
// forges X-Forwarded-For; neither escapes the per-IP limit.
func TestByRemoteIPAttacks(t *testing.T) {
	t.Parallel()
	l, err := NewLocal(LocalConfig{Limit: Limit{Rate: 0.01, Burst: 3}, Now: newManualClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		remote func(i int) string
	}{
		{"ipv6 address rotation", func(i int) string { return fmt.Sprintf("[2001:db8:aa:bb:%x::%x]:443", i, i+1) }},
		{"forwarded-for rotation", func(int) string { return "198.51.100.9:1234" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allowed := 0
			for i := range 100 {
				r := httptest.NewRequest("GET", "/", nil)
				r.RemoteAddr = tt.remote(i)
				r.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
				key, err := ByRemoteIP(r)
				if err != nil {
					t.Fatal(err)
				}
				res, err := l.Allow(context.Background(), key)
				if err != nil {
					t.Fatal(err)
				}
				if res.Allowed {
					allowed++
				}
			}
			if allowed != 3 {
				t.Fatalf("allowed %d of 100, want the burst of 3", allowed)
			}
		})
	}
}

func FuzzIPKeyFromRemoteAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.7:5555", "[::ffff:1.2.3.4]:1", "[fe80::1%eth0]:1", "[2001:db8::1]:443", "", "::1", "[::1", "1.2.3.4:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		key, err := IPKeyFromRemoteAddr(remote)
		if err != nil {
			if key != "" {
				t.Fatalf("error with key %q", key)
			}
			return
		}
		switch {
		case strings.HasPrefix(key, "ip4:"):
			a, err := netip.ParseAddr(strings.TrimPrefix(key, "ip4:"))
			if err != nil || !a.Is4() {
				t.Fatalf("key %q: not an IPv4 address", key)
			}
		case strings.HasPrefix(key, "ip6:"):
			p, err := netip.ParsePrefix(strings.TrimPrefix(key, "ip6:"))
			if err != nil || p.Bits() != 64 || p != p.Masked() || p.Addr().Is4In6() {
				t.Fatalf("key %q: not a masked /64", key)
			}
		default:
			t.Fatalf("key %q: unknown form", key)
		}
		if len(key) > 64 {
			t.Fatalf("key %q too long", key)
		}
		if again, _ := IPKeyFromRemoteAddr(remote); again != key {
			t.Fatalf("not deterministic: %q then %q", key, again)
		}
	})
}
