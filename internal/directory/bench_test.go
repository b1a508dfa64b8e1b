package directory

import (
	"encoding/json"
	"testing"
)

func BenchmarkDecodeAndValidate(b *testing.B) {
	data, err := json.Marshal(payments())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := DecodeService(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Validate(testTD); err != nil {
			b.Fatal(err)
		}
	}
}
