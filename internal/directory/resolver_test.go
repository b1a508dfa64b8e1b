package directory

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestResolver(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		e := newAPIEnv(t, db)
		const id = "spiffe://bulwark.test/ns/bank/sa/ledger"
		body := []byte(`{"id":"` + id + `","name":"ledger","endpoints":["127.0.0.1:15443"],"owner":"core-banking","data_classes":["confidential"]}`)
		if code, b := e.call(t, http.MethodPut, servicePath(id), e.cred, "application/json", body); code != http.StatusOK && code != http.StatusCreated {
			t.Fatalf("put: %d %s", code, b)
		}
		now := time.Unix(1_800_000_000, 0)
		r := NewResolver(e.srv.URL, e.srv.Client(), time.Minute)
		r.now = func() time.Time { return now }
		ctx := context.Background()

		got, eps, err := r.Resolve(ctx, "ledger")
		if err != nil || got.String() != id || len(eps) != 1 || eps[0] != "127.0.0.1:15443" {
			t.Fatalf("resolve ledger: %v %v %v", got, eps, err)
		}
		for _, name := range []string{"nobody", "../admin", "Ledger", ""} {
			if _, _, err := r.Resolve(ctx, name); !errors.Is(err, mesh.ErrUnknownService) {
				t.Errorf("resolve %q: %v, want ErrUnknownService", name, err)
			}
		}

		// The control plane goes away: the last good answer is served, even
		// after the TTL; a name never resolved fails without a guess.
		e.srv.Close()
		now = now.Add(time.Hour)
		if got, _, err := r.Resolve(ctx, "ledger"); err != nil || got.String() != id {
			t.Fatalf("resolve ledger with the control plane down: %v %v", got, err)
		}
		if _, _, err := r.Resolve(ctx, "payments"); err == nil || errors.Is(err, mesh.ErrUnknownService) {
			t.Fatalf("resolve an unseen name with the control plane down: %v", err)
		}
	})
}
