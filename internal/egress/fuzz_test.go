package egress

import (
	"net/url"
	"testing"
)

func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com/", "http://127.0.0.1/", "http://2130706433/", "http://0x7f.1/",
		"http://[::ffff:127.0.0.1]/", "https://[64:ff9b::a9fe:a9fe]/", "https://[fe80::1%25eth0]/",
		"https://8.8.8.8:443/x", "https://012.0.0.1/", "https://u@h/", "https:opaque", "https://0x/",
		"https://[2002:a9fe:a9fe::]/", "https://localhost./", "https://1.2.3.4.5/",
	} {
		f.Add(s)
	}
	g, err := New(Config{Schemes: []string{"http", "https"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if g.CheckURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q that url.Parse refuses: %v", raw, err)
		}
		if u.User != nil || u.Hostname() == "" {
			t.Fatalf("accepted %q with credentials or no host", raw)
		}
		addr, _, _, ok := parseHostIP(u.Hostname())
		if !ok {
			return
		}
		if r := classify(addr); r != "" {
			t.Fatalf("accepted %q whose host %s is blocked: %s", raw, addr, r)
		}
		a := addr.WithZone("").Unmap()
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
			a.IsMulticast() || a.IsUnspecified() || a.IsInterfaceLocalMulticast() {
			t.Fatalf("accepted %q whose host %s is not public", raw, a)
		}
	})
}
