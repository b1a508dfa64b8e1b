package authz

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFetchTrustedKeys(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := `{"keys":[{"key_id":"k1","public_key":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}]}`
	for _, tc := range []struct {
		name, body string
		status     int
		wantErr    string
	}{
		{"one key", good, http.StatusOK, ""},
		{"no key", `{"keys":[]}`, http.StatusOK, "published none"},
		{"short key", `{"keys":[{"key_id":"k1","public_key":"AAAA"}]}`, http.StatusOK, `"k1": not a base64url Ed25519`},
		{"not JSON", `keys`, http.StatusOK, "policy bundle keys"},
		{"too large", `{"keys":[],"pad":"` + strings.Repeat("x", MaxBundleKeysBytes) + `"}`, http.StatusOK, "larger than"},
		{"refused", `{}`, http.StatusUnauthorized, "status 401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != BundleKeysPath {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			keys, raw, err := FetchTrustedKeys(t.Context(), srv.Client(), srv.URL+"/")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(keys) != 1 || !keys[0].Equal(pub) || string(raw) != good {
				t.Fatalf("keys %v, raw %q, err %v", keys, raw, err)
			}
			// The pinned document reads back to the same keys.
			again, err := DecodeTrustedKeys(raw)
			if err != nil || !again[0].Equal(pub) {
				t.Fatalf("decode the pinned document: %v %v", again, err)
			}
		})
	}
}
