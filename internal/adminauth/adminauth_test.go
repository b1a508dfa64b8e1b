package adminauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRequireRefusesEveryForgery(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var logs syncBuffer
		reg := prometheus.NewRegistry()
		auth, err := adminauth.New(db, slog.New(slog.NewJSONHandler(&logs, nil)), reg)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := auth.EnsureCredential(ctx)
		if err != nil || !strings.HasPrefix(cred, adminauth.Prefix) {
			t.Fatalf("EnsureCredential = %q, %v", cred, err)
		}
		if again, err := auth.EnsureCredential(ctx); err != nil || again != "" {
			t.Fatalf("second EnsureCredential = %q, %v; the secret must not be recoverable", again, err)
		}
		// The database holds only a hash.
		var stored []byte
		if err := db.QueryRowContext(ctx, "SELECT hash FROM admin_credentials").Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(stored, []byte(cred)) || len(stored) != 32 {
			t.Fatalf("stored credential is not a SHA-256 hash: %d bytes", len(stored))
		}

		id := cred[len(adminauth.Prefix) : len(adminauth.Prefix)+16]
		secret := cred[len(adminauth.Prefix)+17:]
		// Change one character of the secret to another valid base64url
		// character, so the credential keeps its shape and only the secret
		// is wrong.
		flipped := []byte(secret)
		if flipped[0] == 'A' {
			flipped[0] = 'B'
		} else {
			flipped[0] = 'A'
		}
		srv := httptest.NewServer(httpapi.WithRequestID(auth.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "admin:"+adminauth.CredentialID(r.Context()))
		}))))
		defer srv.Close()

		tests := []struct {
			name   string
			header string
			want   int
		}{
			{"valid", "Bearer " + cred, http.StatusOK},
			{"valid, lower-case scheme", "bearer " + cred, http.StatusOK},
			{"missing", "", http.StatusUnauthorized},
			{"basic scheme", "Basic " + cred, http.StatusUnauthorized},
			{"empty bearer", "Bearer ", http.StatusUnauthorized},
			{"wrong secret, right id", "Bearer " + adminauth.Prefix + id + "_" + string(flipped), http.StatusUnauthorized},
			{"unknown id", "Bearer " + adminauth.Prefix + "0000000000000000_" + secret, http.StatusUnauthorized},
			{"truncated", "Bearer " + cred[:len(cred)-1], http.StatusUnauthorized},
			{"extended", "Bearer " + cred + "A", http.StatusUnauthorized},
			{"no prefix", "Bearer " + cred[len(adminauth.Prefix):], http.StatusUnauthorized},
			{"sql in id", "Bearer " + adminauth.Prefix + "' OR '1'='1'--_" + secret, http.StatusUnauthorized},
			{"oversized", "Bearer " + strings.Repeat("a", 10000), http.StatusUnauthorized},
		}
		for _, tt := range tests {
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s: status %d, want %d (%s)", tt.name, resp.StatusCode, tt.want, body)
				continue
			}
			if tt.want == http.StatusOK {
				if string(body) != "admin:"+id {
					t.Errorf("%s: handler saw %q", tt.name, body)
				}
				continue
			}
			var eb httpapi.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != httpapi.CodeUnauthenticated || eb.Error.RequestID == "" {
				t.Errorf("%s: error body %s", tt.name, body)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: no WWW-Authenticate challenge", tt.name)
			}
		}
		refusals := 0
		for _, tt := range tests {
			if tt.want != http.StatusOK {
				refusals++
			}
		}
		// Every refusal is counted and logged, and the log never holds the secret.
		if got := testutil.ToFloat64(mustCounter(t, reg, "bulwark_admin_auth_failures_total")); int(got) != refusals {
			t.Errorf("failure counter = %v, want %d", got, refusals)
		}
		out := logs.String()
		if n := strings.Count(out, "admin authentication refused"); n != refusals {
			t.Errorf("%d refusals logged, want %d", n, refusals)
		}
		if strings.Contains(out, secret) || strings.Contains(out, string(flipped)) {
			t.Fatal("a credential secret reached the log")
		}
		if !strings.Contains(out, `"credential_id":"`+id+`"`) {
			t.Error("the refusal of a wrong secret does not name the credential ID")
		}

		// A revoked credential is refused like a wrong one.
		if _, err := db.ExecContext(ctx, "UPDATE admin_credentials SET revoked_at = 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.Check(ctx, cred); err != adminauth.ErrInvalid {
			t.Fatalf("revoked credential: %v", err)
		}
	})
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: name}, func() float64 {
				return mf.GetMetric()[0].GetCounter().GetValue()
			})
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}
