package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func kids(keys []jose.JSONWebKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KeyID)
	}
	return out
}

func headerOf(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestKeyRotationSchedule walks a key through its life: the next key is
// published KeyPublishAhead before it signs, and the old key stays
// published until every token it signed has expired.
func TestKeyRotationSchedule(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db, func(c *Config) {
			c.KeyRotationInterval = 2 * time.Hour
			c.KeyPublishAhead = 30 * time.Minute
		})
		ctx := context.Background()
		km := env.srv.keys
		now := env.clock.Now
		first := km.published(now())
		if len(first) != 1 {
			t.Fatalf("first start publishes %d keys", len(first))
		}
		k1 := first[0].KeyID
		sign := func() string {
			t.Helper()
			tok, err := km.sign(TypAccessToken, map[string]any{"sub": "x", "exp": now().Add(5 * time.Minute).Unix()})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		oldToken := sign()

		// Before the publish-ahead point nothing changes.
		env.clock.Advance(80 * time.Minute)
		if err := km.rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := kids(km.published(now())); len(got) != 1 {
			t.Fatalf("at 1h20m: published %v", got)
		}
		// 30 minutes before it is due, the successor is published but
		// does not sign yet.
		env.clock.Advance(11 * time.Minute)
		if err := km.rotate(ctx); err != nil {
			t.Fatal(err)
		}
		got := kids(km.published(now()))
		if len(got) != 2 || got[0] != k1 {
			t.Fatalf("at 1h31m: published %v", got)
		}
		k2 := got[1]
		if kid := headerOf(t, sign())["kid"]; kid != k1 {
			t.Fatalf("successor signs before its time: kid %v", kid)
		}
		// Rotating again is a no-op: one successor at a time.
		if err := km.rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := kids(km.published(now())); len(got) != 2 {
			t.Fatalf("second rotate published %v", got)
		}
		// At 2h the successor signs; the old key stays published.
		env.clock.Advance(30 * time.Minute)
		if err := km.rotate(ctx); err != nil {
			t.Fatal(err)
		}
		lastOld := oldToken
		if kid := headerOf(t, sign())["kid"]; kid != k2 {
			t.Fatalf("at 2h1m the new key does not sign: kid %v", kid)
		}
		if got := kids(km.published(now())); len(got) != 2 {
			t.Fatalf("at 2h1m: published %v, want both keys", got)
		}
		if _, err := km.verify(lastOld, TypAccessToken); err != nil {
			t.Fatalf("token of the retired key refused while still published: %v", err)
		}
		// Once every token the old key signed has expired (access token
		// TTL 5m + 1m grace after retirement), it leaves the JWKS and
		// its tokens no longer verify.
		env.clock.Advance(6 * time.Minute)
		if err := km.rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := kids(km.published(now())); len(got) != 1 || got[0] != k2 {
			t.Fatalf("after retirement: published %v, want only %s", got, k2)
		}
		if _, err := km.verify(lastOld, TypAccessToken); err == nil {
			t.Fatal("a token of a removed key still verifies")
		}
	})
}

// TestKeyRotationOnAlgorithmChange checks that changing signing_alg
// schedules a key of the new algorithm at once, published ahead.
func TestKeyRotationOnAlgorithmChange(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	env := newTestEnv(t, db)
	ctx := context.Background()
	env.srv.cfg.SigningAlg = config.AlgES256
	if err := env.srv.keys.rotate(ctx); err != nil {
		t.Fatal(err)
	}
	keys := env.srv.keys.published(env.clock.Now())
	if len(keys) != 2 || keys[1].Algorithm != "ES256" {
		t.Fatalf("published %v", keys)
	}
	env.clock.Advance(env.srv.cfg.KeyPublishAhead)
	if err := env.srv.keys.rotate(ctx); err != nil {
		t.Fatal(err)
	}
	tok, err := env.srv.keys.sign(TypAccessToken, map[string]any{"sub": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if alg := headerOf(t, tok)["alg"]; alg != "ES256" {
		t.Fatalf("alg %v after the publish-ahead time", alg)
	}
}

// TestVerifyRefusesForgedOwnTokens attacks the server's own token check.
func TestVerifyRefusesForgedOwnTokens(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	env := newTestEnv(t, db)
	km := env.srv.keys
	good, err := km.sign(TypAccessToken, map[string]any{"sub": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	kid := headerOf(t, good)["kid"].(string)
	parts := strings.Split(good, ".")
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	payload := parts[1]
	pub, _ := json.Marshal(km.published(env.clock.Now())[0])
	mac := func(h string) string {
		m := hmac.New(sha256.New, pub)
		m.Write([]byte(h + "." + payload))
		return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	hs := enc(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid})
	tests := []struct {
		name, token, typ string
	}{
		{"alg none", enc(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + payload + ".", TypAccessToken},
		{"HS256 keyed with the public key", hs + "." + payload + "." + mac(hs), TypAccessToken},
		{"signature stripped", parts[0] + "." + payload + ".", TypAccessToken},
		{"wrong typ", good, TypIDToken},
		{"unknown kid", enc(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "nope"}) + "." + payload + "." + parts[2], TypAccessToken},
		{"payload swapped", parts[0] + "." + enc(map[string]any{"sub": "mallory"}) + "." + parts[2], TypAccessToken},
		{"many dots", good + ".x", TypAccessToken},
		{"oversized", strings.Repeat("a", maxTokenLen+1), TypAccessToken},
	}
	for _, tt := range tests {
		if _, err := km.verify(tt.token, tt.typ); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if _, err := km.verify(good, TypAccessToken); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
}
