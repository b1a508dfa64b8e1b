package peer

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func signed(t *testing.T, key []byte, now time.Time) http.Header {
	t.Helper()
	h := http.Header{}
	h.Set(HeaderPeerID, "spiffe://bulwark.local/ns/bank/sa/payments")
	h.Set(HeaderUser, "usr_1")
	h.Set(HeaderClient, "bank-api")
	h.Set(HeaderRequestID, "req-1")
	Sign(h, key, http.MethodPost, "/v1/entries?x=1", now)
	return h
}

func TestVerify(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name    string
		mutate  func(h http.Header) (method, path string, k []byte, at time.Time)
		wantErr error
	}{
		{"valid", func(http.Header) (string, string, []byte, time.Time) { return "POST", "/v1/entries?x=1", key, now }, nil},
		{"unsigned", func(h http.Header) (string, string, []byte, time.Time) {
			h.Del(HeaderSignature)
			return "POST", "/v1/entries?x=1", key, now
		}, ErrUnsigned},
		{"other key", func(http.Header) (string, string, []byte, time.Time) { return "POST", "/v1/entries?x=1", other, now }, ErrBadSignature},
		{"other method", func(http.Header) (string, string, []byte, time.Time) { return "GET", "/v1/entries?x=1", key, now }, ErrBadSignature},
		{"other path", func(http.Header) (string, string, []byte, time.Time) { return "POST", "/v1/entries?x=2", key, now }, ErrBadSignature},
		{"forged peer", func(h http.Header) (string, string, []byte, time.Time) {
			h.Set(HeaderPeerID, "spiffe://bulwark.local/ns/bank/sa/notifications")
			return "POST", "/v1/entries?x=1", key, now
		}, ErrBadSignature},
		{"forged user", func(h http.Header) (string, string, []byte, time.Time) {
			h.Set(HeaderUser, "usr_2")
			return "POST", "/v1/entries?x=1", key, now
		}, ErrBadSignature},
		{"second user header", func(h http.Header) (string, string, []byte, time.Time) {
			h.Add(HeaderUser, "usr_2")
			return "POST", "/v1/entries?x=1", key, now
		}, ErrBadSignature},
		{"two signatures", func(h http.Header) (string, string, []byte, time.Time) {
			h.Add(HeaderSignature, h.Get(HeaderSignature))
			return "POST", "/v1/entries?x=1", key, now
		}, ErrBadSignature},
		{"malformed", func(h http.Header) (string, string, []byte, time.Time) {
			h.Set(HeaderSignature, "t=1,v1=zz")
			return "POST", "/v1/entries?x=1", key, now
		}, ErrBadSignature},
		{"replayed later", func(http.Header) (string, string, []byte, time.Time) {
			return "POST", "/v1/entries?x=1", key, now.Add(MaxAge + time.Second)
		}, ErrExpired},
		{"from the future", func(http.Header) (string, string, []byte, time.Time) {
			return "POST", "/v1/entries?x=1", key, now.Add(-MaxAge - time.Second)
		}, ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := signed(t, key, now)
			method, path, k, at := tc.mutate(h)
			id, err := Verify(h, k, method, path, at)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && (id.Peer.String() != "spiffe://bulwark.local/ns/bank/sa/payments" || id.User != "usr_1" ||
				id.Client != "bank-api" || id.RequestID != "req-1") {
				t.Fatalf("identity %+v", id)
			}
		})
	}
}

func TestMiddlewareRefusesDirectCalls(t *testing.T) {
	key, _ := NewKey()
	var refused []error
	srv := httptest.NewServer(Middleware(key, func(_ *http.Request, err error) { refused = append(refused, err) })(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := FromContext(r.Context())
			if !ok {
				t.Error("no identity in context")
				return
			}
			_, _ = w.Write([]byte(id.Peer.String()))
		})))
	defer srv.Close()

	// A direct call, even one claiming an identity, is refused.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/entries", nil)
	req.Header.Set(HeaderPeerID, "spiffe://bulwark.local/ns/bank/sa/payments")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(refused) != 1 || !errors.Is(refused[0], ErrUnsigned) {
		t.Fatalf("direct call: %d, refusals %v", resp.StatusCode, refused)
	}

	// A call signed by the agent passes.
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/v1/entries", nil)
	req.Header.Set(HeaderPeerID, "spiffe://bulwark.local/ns/bank/sa/payments")
	Sign(req.Header, key, http.MethodGet, "/v1/entries", time.Now())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(refused) != 1 {
		t.Fatalf("signed call: %d, refusals %v", resp.StatusCode, refused)
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := NewKey()
	for _, tc := range []struct {
		name, content string
		ok            bool
	}{
		{"valid", string(EncodeKey(key)), true},
		{"short", "abcd\n", false},
		{"not hex", "zz" + string(EncodeKey(key))[2:], false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadKeyFile(p)
			if (err == nil) != tc.ok || (tc.ok && string(got) != string(key)) {
				t.Fatalf("LoadKeyFile: %v", err)
			}
		})
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// FuzzVerify feeds Verify arbitrary signature and identity headers: it
// must never panic, and accept only what Sign produced with the key.
func FuzzVerify(f *testing.F) {
	key := make([]byte, KeySize)
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	h.Set(HeaderPeerID, "spiffe://bulwark.local/ns/bank/sa/payments")
	Sign(h, key, "GET", "/v1/x", now)
	f.Add(h.Get(HeaderSignature), h.Get(HeaderPeerID), "", "GET", "/v1/x")
	f.Add("t=1,v1=00", "spiffe://x/y", "u", "POST", "/")
	f.Add("t=99999999999999999999,v1=", "", "", "", "")
	f.Fuzz(func(t *testing.T, sig, peerID, user, method, path string) {
		in := http.Header{}
		in[HeaderSignature] = []string{sig}
		in[HeaderPeerID] = []string{peerID}
		in[HeaderUser] = []string{user}
		id, err := Verify(in, key, method, path, now)
		if err != nil {
			return
		}
		// Accepted: then signing the same fields must give the same value.
		re := http.Header{}
		re.Set(HeaderPeerID, peerID)
		re.Set(HeaderUser, user)
		ts := strings.TrimPrefix(strings.SplitN(sig, ",", 2)[0], "t=")
		sec, _ := strconv.ParseInt(ts, 10, 64)
		Sign(re, key, method, path, time.Unix(sec, 0))
		if re.Get(HeaderSignature) != sig || id.Peer.String() != peerID {
			t.Fatalf("accepted %q for %q, which Sign does not produce", sig, peerID)
		}
	})
}
