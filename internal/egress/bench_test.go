package egress

import "testing"

func BenchmarkCheckURL(b *testing.B) {
	g, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, u := range []string{"https://example.com/.well-known/jwks.json", "https://0x7f.1/", "https://[2606:4700::1111]/"} {
		b.Run(u, func(b *testing.B) {
			for b.Loop() {
				_ = g.CheckURL(u)
			}
		})
	}
}
