package directory

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func FuzzDecodeService(f *testing.F) {
	for _, seed := range []string{
		`{"id":"spiffe://bulwark.test/payments","name":"payments","endpoints":["127.0.0.1:9001","[::1]:9001"],"owner":"team","data_classes":["public"],"region":"eu"}`,
		`{"id":"spiffe://bulwark.test/a/../b","name":"-","endpoints":["a:0"]}`,
		`{"id":"x","unknown":1}`,
		`{"endpoints":["a:1","a:1"]} x`,
		`{"created_at":"2020-01-01T00:00:00Z","updated_at":null}`,
		`{"id":"spiffe://bulwark.test/\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeService(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("decode error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		verr := s.Validate(testTD)
		if verr != nil {
			var fe *FieldError
			if !errors.As(verr, &fe) || fe.Field == "" || !errors.Is(verr, ErrInvalid) {
				t.Fatalf("validation error is not a field error: %v", verr)
			}
			return
		}
		// A valid service survives a round trip unchanged.
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodeService(b)
		if err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		if !s.CreatedAt.Equal(s2.CreatedAt) || !s.UpdatedAt.Equal(s2.UpdatedAt) {
			t.Fatalf("round trip changed the times: %+v -> %+v", s, s2)
		}
		s.CreatedAt, s.UpdatedAt = s2.CreatedAt, s2.UpdatedAt
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the service: %+v -> %+v", s, s2)
		}
		if err := s2.Validate(testTD); err != nil {
			t.Fatalf("round trip made it invalid: %v", err)
		}
	})
}
