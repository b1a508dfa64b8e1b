package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestDiscoveryAndJWKS(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db)
		// go-oidc reads the discovery document and checks the issuer.
		ctx := oidc.ClientContext(context.Background(), env.client())
		p, err := oidc.NewProvider(ctx, env.url)
		if err != nil {
			t.Fatal(err)
		}
		if p.Endpoint().TokenURL != env.url+PathToken {
			t.Errorf("token endpoint %q", p.Endpoint().TokenURL)
		}
		for _, path := range []string{PathOIDCDiscovery, PathASMetadata} {
			resp, err := env.client().Get(env.url + path)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
			}
			if m["issuer"] != env.url || m["authorization_response_iss_parameter_supported"] != true {
				t.Errorf("%s: %v", path, m)
			}
		}
		resp, err := env.client().Get(env.url + PathJWKS)
		if err != nil {
			t.Fatal(err)
		}
		var set jose.JSONWebKeySet
		err = json.NewDecoder(resp.Body).Decode(&set)
		resp.Body.Close()
		if err != nil || len(set.Keys) != 1 {
			t.Fatalf("jwks: %v %v", set, err)
		}
		k := set.Keys[0]
		if !k.IsPublic() || k.Algorithm != "EdDSA" || k.Use != "sig" || k.KeyID == "" {
			t.Errorf("jwks key %+v", k)
		}
	})
}
