package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/clocktest"
)

// tokenEndpoint is a token endpoint that checks the client assertion and
// answers with a fresh token each time; status, if set, is answered instead.
type tokenEndpoint struct {
	srv       *httptest.Server
	pub       any
	calls     atomic.Int64
	expiresIn atomic.Int64
	status    atomic.Int64
	gate      chan struct{}
}

func newTokenEndpoint(t *testing.T, pub any) *tokenEndpoint {
	te := &tokenEndpoint{pub: pub}
	te.expiresIn.Store(300)
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		te.calls.Add(1)
		if te.gate != nil {
			<-te.gate
		}
		if s := te.status.Load(); s != 0 {
			writeJSON(w, int(s), map[string]string{"error": "invalid_grant"})
			return
		}
		_ = r.ParseForm()
		jws, err := jose.ParseSignedCompact(r.PostForm.Get("client_assertion"), []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
		if err != nil {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
			return
		}
		payload, err := jws.Verify(te.pub)
		var c struct {
			Iss, Sub, Jti string
			Aud           any
			Exp, Iat      int64
		}
		if err != nil || json.Unmarshal(payload, &c) != nil || c.Iss != "bank-api" || c.Sub != "bank-api" || c.Aud != te.srv.URL+"/token" ||
			c.Jti == "" || c.Exp <= c.Iat || r.PostForm.Get("grant_type") != grantTokenExchange || r.PostForm.Get("audience") == "" {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
			return
		}
		writeJSON(w, 200, map[string]any{"access_token": "h.p" + r.PostForm.Get("audience") + ".s" + c.Jti, "issued_token_type": tokenTypeAccessToken,
			"token_type": "Bearer", "expires_in": te.expiresIn.Load()})
	}))
	t.Cleanup(te.srv.Close)
	return te
}

func TestExchangerCachesPerSignatureAndAudience(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	te := newTokenEndpoint(t, key.Public())
	clock := &clocktest.Clock{}
	ex, err := NewExchanger(ExchangerConfig{TokenURL: te.srv.URL + "/token", ClientID: "bank-api", Key: key, Now: clock.Now, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	subject := "aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJl"
	a1, exp, err := ex.Exchange(ctx, subject, "spiffe://td/a")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a1, "spiffe://td/a") || exp.Before(clock.Now().Add(299*time.Second)) {
		t.Fatalf("token %q exp %v", a1, exp)
	}
	// Same signature (another payload), same audience: cached.
	if a2, _, _ := ex.Exchange(ctx, "eA.eQ.c2lnbmF0dXJl", "spiffe://td/a"); a2 != a1 || te.calls.Load() != 1 {
		t.Fatalf("not cached: %d calls", te.calls.Load())
	}
	// Another audience: another token.
	if b, _, _ := ex.Exchange(ctx, subject, "spiffe://td/b"); b == a1 || te.calls.Load() != 2 {
		t.Fatalf("audience not in the key: %d calls", te.calls.Load())
	}
	// 30s before expiry the cached token is no longer used.
	clock.Advance(271 * time.Second)
	if a3, _, _ := ex.Exchange(ctx, subject, "spiffe://td/a"); a3 == a1 || te.calls.Load() != 3 {
		t.Fatalf("expiring token reused: %d calls", te.calls.Load())
	}
	// Bounded size.
	_, _, _ = ex.Exchange(ctx, subject, "spiffe://td/c")
	if n := ex.Len(); n > 2 {
		t.Fatalf("%d cached, bound 2", n)
	}
	// A token living less than the margin is not cached.
	te.expiresIn.Store(20)
	_, _, _ = ex.Exchange(ctx, subject, "spiffe://td/short")
	_, _, _ = ex.Exchange(ctx, subject, "spiffe://td/short")
	if te.calls.Load() != 6 {
		t.Fatalf("short-lived token cached: %d calls", te.calls.Load())
	}
}

func TestExchangerOneRequestForConcurrentMisses(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	te := newTokenEndpoint(t, key.Public())
	te.gate = make(chan struct{})
	ex, err := NewExchanger(ExchangerConfig{TokenURL: te.srv.URL + "/token", ClientID: "bank-api", Key: key, KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	tokens := make([]string, 8)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, _, err := ex.Exchange(context.Background(), "a.b.c2ln", "spiffe://td/a")
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok
		}()
	}
	for te.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(te.gate)
	wg.Wait()
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	for _, tok := range tokens {
		if tok != tokens[0] || tok == "" {
			t.Fatalf("tokens differ: %q", tokens)
		}
	}
}

func TestExchangerFailures(t *testing.T) {
	t.Parallel()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	te := newTokenEndpoint(t, key.Public())
	te.status.Store(http.StatusBadRequest)
	ex, err := NewExchanger(ExchangerConfig{TokenURL: te.srv.URL + "/token", ClientID: "bank-api", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ name, subject, aud string }{
		{"refused", "a.b.c2ln", "spiffe://td/a"},
		{"refused again, not cached", "a.b.c2ln", "spiffe://td/a"},
		{"not a JWS", "opaque", "spiffe://td/a"},
		{"bad signature encoding", "a.b.c2ln=", "spiffe://td/a"},
		{"no audience", "a.b.c2ln", ""},
	} {
		if _, _, err := ex.Exchange(ctx, tc.subject, tc.aud); !errors.Is(err, ErrExchange) {
			t.Errorf("%s: %v", tc.name, err)
		} else if strings.Contains(err.Error(), tc.subject) && tc.subject != "" && len(tc.subject) > 8 {
			t.Errorf("%s: the error quotes the token: %v", tc.name, err)
		}
	}
	if n := te.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
	te.srv.Close()
	if _, _, err := ex.Exchange(ctx, "a.b.c2lnMg", "spiffe://td/a"); !errors.Is(err, ErrExchange) {
		t.Errorf("down: %v", err)
	}
	for _, cfg := range []ExchangerConfig{
		{ClientID: "c", Key: key},
		{TokenURL: "ftp://x/token", ClientID: "c", Key: key},
		{TokenURL: "https://x/token", Key: key},
		{TokenURL: "https://x/token", ClientID: "c"},
		{TokenURL: "https://x/token", ClientID: "c", Key: key, CacheSize: -1},
	} {
		if _, err := NewExchanger(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
