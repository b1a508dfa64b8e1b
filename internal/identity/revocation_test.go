package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// getFeed reads the revocation feed with the raw query.
func (f *mgmtFixture) getFeed(ctx context.Context, query string) (int, feedPage, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.env.url+PathRevocations+query, nil)
	if err != nil {
		return 0, feedPage{}, nil, err
	}
	resp, err := f.env.client().Do(req)
	if err != nil {
		return 0, feedPage{}, nil, err
	}
	defer resp.Body.Close()
	var page feedPage
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			return 0, feedPage{}, nil, err
		}
	}
	return resp.StatusCode, page, resp.Header, nil
}

func (f *mgmtFixture) mustFeed(query string) feedPage {
	f.t.Helper()
	status, page, h, err := f.getFeed(f.ctx, query)
	if err != nil || status != http.StatusOK {
		f.t.Fatalf("GET %s%s: %d, %v", PathRevocations, query, status, err)
	}
	if cc := h.Get("Cache-Control"); cc != "no-store" {
		f.t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	return page
}

func TestRevocationFeedPaging(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		now := f.env.clock.Now()
		// 1005 live entries and 10 expired ones interleaved, in one
		// transaction as another replica might have written them.
		err := db.InTx(f.ctx, func(tx *store.Tx) error {
			for i := range 1015 {
				exp := now.Add(time.Hour)
				if i%100 == 50 && i < 1000 {
					exp = now.Add(-time.Second)
				}
				if _, err := tx.ExecContext(f.ctx, "INSERT INTO identity_revocations (jti, expires_at, revoked_at, reason) VALUES (?, ?, ?, 'test')",
					fmt.Sprintf("at_%04d", i), exp.UnixMilli(), now.UnixMilli()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		first := f.mustFeed("?after=0")
		if len(first.Revocations) != 990 {
			t.Fatalf("first page: %d entries, want 990 (1000 rows read, 10 expired)", len(first.Revocations))
		}
		for i, e := range first.Revocations {
			if i > 0 && e.Seq <= first.Revocations[i-1].Seq {
				t.Fatalf("entries out of seq order at %d", i)
			}
			if e.Exp < now.Add(time.Hour).Unix() || e.JTI == "" {
				t.Fatalf("entry %+v: exp or jti wrong", e)
			}
		}
		if first.Next != first.Revocations[len(first.Revocations)-1].Seq {
			t.Fatalf("next = %d, want the last seq %d", first.Next, first.Revocations[len(first.Revocations)-1].Seq)
		}
		second := f.mustFeed(fmt.Sprintf("?after=%d&wait=0", first.Next))
		if len(second.Revocations) != 15 || second.Revocations[0].Seq <= first.Next || second.Revocations[14].JTI != "at_1014" {
			t.Fatalf("second page: %+v", second)
		}
		third := f.mustFeed(fmt.Sprintf("?after=%d", second.Next))
		if len(third.Revocations) != 0 || third.Next != second.Next {
			t.Fatalf("caught-up page: %+v, want empty with next %d", third, second.Next)
		}

		// Expired entries leave the feed, and next still moves past them.
		f.env.clock.Advance(2 * time.Hour)
		if page := f.mustFeed(""); len(page.Revocations) != 0 || page.Next != first.Next {
			t.Fatalf("after expiry: %d entries, next %d, want none and %d", len(page.Revocations), page.Next, first.Next)
		}
		if page := f.mustFeed(fmt.Sprintf("?after=%d&wait=5", first.Next)); len(page.Revocations) != 0 || page.Next != second.Next {
			t.Fatalf("after expiry: %d entries, next %d, want none and %d", len(page.Revocations), page.Next, second.Next)
		}
	})
}

func TestRevocationFeedInvalidParameters(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		for _, q := range []string{"?after=-1", "?after=abc", "?after=", "?after=1.5", "?wait=31", "?wait=-1", "?wait=1s",
			"?after=1&after=2", "?wait=1&wait=1", "?after=99999999999999999999", "?after=%zz"} {
			t.Run(q, func(t *testing.T) {
				status, body := f.do(http.MethodGet, PathRevocations+q, "", "")
				if status != http.StatusBadRequest || oauthError(t, body) != "invalid_request" {
					t.Fatalf("got %d %s, want 400 invalid_request", status, body)
				}
			})
		}
		if status, _ := f.do(http.MethodPost, PathRevocations, "", ""); status != http.StatusMethodNotAllowed {
			t.Errorf("POST: %d, want 405", status)
		}
	})
}

func TestRevocationFeedLongPoll(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		start := f.mustFeed("")

		type result struct {
			page feedPage
			at   time.Time
			err  error
		}
		poll := func(query string) <-chan result {
			ch := make(chan result, 1)
			go func() {
				status, page, _, err := f.getFeed(f.ctx, query)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("status %d", status)
				}
				ch <- result{page, time.Now(), err}
			}()
			return ch
		}

		t.Run("in-process revocation wakes the poll", func(t *testing.T) {
			ch := poll(fmt.Sprintf("?after=%d&wait=20", start.Next))
			time.Sleep(300 * time.Millisecond)
			revokedAt := time.Now()
			if err := f.env.srv.revokeAccessToken(f.ctx, "at_wake", f.env.clock.Now().Add(time.Minute), "test"); err != nil {
				t.Fatal(err)
			}
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			if d := r.at.Sub(revokedAt); d > time.Second {
				t.Errorf("the poll answered %s after the revocation, want within 1s", d)
			}
			if len(r.page.Revocations) != 1 || r.page.Revocations[0].JTI != "at_wake" {
				t.Fatalf("page %+v, want at_wake", r.page)
			}
			start = r.page
		})
		t.Run("another replica's revocation is found by polling", func(t *testing.T) {
			ch := poll(fmt.Sprintf("?after=%d&wait=20", start.Next))
			time.Sleep(300 * time.Millisecond)
			revokedAt := time.Now()
			f.exec("INSERT INTO identity_revocations (jti, expires_at, revoked_at, reason) VALUES ('at_replica', ?, ?, 'test')",
				f.env.clock.Now().Add(time.Minute).UnixMilli(), f.env.clock.Now().UnixMilli())
			r := <-ch
			if r.err != nil {
				t.Fatal(r.err)
			}
			if d := r.at.Sub(revokedAt); d > 2*time.Second {
				t.Errorf("the poll answered %s after the revocation, want within 2s", d)
			}
			if len(r.page.Revocations) != 1 || r.page.Revocations[0].JTI != "at_replica" {
				t.Fatalf("page %+v, want at_replica", r.page)
			}
			start = r.page
		})
		t.Run("nothing new: empty after wait", func(t *testing.T) {
			began := time.Now()
			r := <-poll(fmt.Sprintf("?after=%d&wait=1", start.Next))
			if r.err != nil {
				t.Fatal(r.err)
			}
			if d := time.Since(began); d < 900*time.Millisecond || d > 5*time.Second {
				t.Errorf("wait=1 took %s", d)
			}
			if len(r.page.Revocations) != 0 || r.page.Next != start.Next {
				t.Fatalf("page %+v", r.page)
			}
		})
		t.Run("client cancellation ends the poll", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(f.ctx, 200*time.Millisecond)
			defer cancel()
			began := time.Now()
			_, _, _, err := f.getFeed(ctx, fmt.Sprintf("?after=%d&wait=30", start.Next))
			if err == nil {
				t.Fatal("a cancelled poll returned a response")
			}
			if d := time.Since(began); d > 5*time.Second {
				t.Errorf("cancelled poll took %s", d)
			}
		})
	})
}

func TestRevokeGrantCascades(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		ctx := f.ctx
		now := f.env.clock.Now()
		f.addGrant("grt_a", "app", "usr_alice", "openid", map[string]time.Time{
			"at_a1": now.Add(time.Minute), "at_a2": now.Add(2 * time.Minute), "at_old": now.Add(-time.Minute)})
		f.addGrant("grt_b", "app", "usr_alice", "openid", map[string]time.Time{"at_b1": now.Add(time.Minute)})
		// A second refresh token in the grant (a rotated family).
		f.exec(`INSERT INTO identity_refresh_tokens (token_hash, grant_id, client_id, data, created_at, expires_at)
			VALUES (?, 'grt_a', 'app', '{}', ?, ?)`, hashSecret(newSecret()), now.UnixMilli(), now.Add(time.Hour).UnixMilli())
		before := f.mustFeed("")

		if err := f.env.srv.revokeGrant(ctx, "grt_a", "code_reuse"); err != nil {
			t.Fatal(err)
		}
		count := func(q string, args ...any) int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count("SELECT COUNT(*) FROM identity_grants WHERE revoked_at IS NOT NULL"); n != 1 {
			t.Errorf("%d grants revoked, want 1", n)
		}
		if n := count("SELECT COUNT(*) FROM identity_refresh_tokens WHERE grant_id = 'grt_a' AND revoked_at IS NULL"); n != 0 {
			t.Errorf("%d refresh tokens of the grant left unrevoked", n)
		}
		if n := count("SELECT COUNT(*) FROM identity_refresh_tokens WHERE grant_id = 'grt_b' AND revoked_at IS NULL"); n != 1 {
			t.Errorf("the other grant's refresh token was revoked")
		}
		for jti, want := range map[string]bool{"at_a1": true, "at_a2": true, "at_old": false, "at_b1": false} {
			if got, err := f.env.srv.isRevoked(ctx, jti); err != nil || got != want {
				t.Errorf("isRevoked(%s) = %v, %v; want %v", jti, got, err, want)
			}
		}
		page := f.mustFeed(fmt.Sprintf("?after=%d", before.Next))
		if len(page.Revocations) != 2 {
			t.Fatalf("feed after revoking the grant: %+v", page)
		}
		if n := count("SELECT COUNT(*) FROM identity_revocations WHERE reason = 'code_reuse'"); n != 2 {
			t.Errorf("reason recorded on %d entries, want 2", n)
		}

		// Idempotent: nothing new in the feed, but the attempt is audited.
		if err := f.env.srv.revokeGrant(ctx, "grt_a", "code_reuse"); err != nil {
			t.Fatal(err)
		}
		if again := f.mustFeed(fmt.Sprintf("?after=%d", page.Next)); len(again.Revocations) != 0 {
			t.Fatalf("a second revocation added %+v", again)
		}
		if n := f.env.countEvents(classAPIActivity, actDelete, audit.StatusSuccess); n != 2 {
			t.Errorf("%d grant revocations audited, want 2", n)
		}
		if err := f.env.srv.revokeGrant(ctx, "", "x"); err == nil {
			t.Error("revokeGrant accepted an empty grant ID")
		}
	})
}

func TestRevokeAccessToken(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		ctx, srv := f.ctx, f.env.srv
		exp := f.env.clock.Now().Add(time.Minute)
		for range 2 {
			if err := srv.revokeAccessToken(ctx, "at_1", exp, "test"); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.revokeAccessToken(ctx, "at_expired", f.env.clock.Now().Add(-time.Second), "test"); err != nil {
			t.Fatal(err)
		}
		if err := srv.revokeAccessToken(ctx, "", exp, "test"); err == nil {
			t.Error("an empty jti was accepted")
		}
		page := f.mustFeed("")
		if len(page.Revocations) != 1 || page.Revocations[0].JTI != "at_1" || page.Revocations[0].Exp != (exp.UnixMilli()+999)/1000 {
			t.Fatalf("feed: %+v", page)
		}
		// Pruning drops expired entries only.
		f.env.clock.Advance(30 * time.Second)
		if err := srv.prune(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _ := srv.isRevoked(ctx, "at_1"); !ok {
			t.Fatal("prune dropped an unexpired revocation")
		}
		f.env.clock.Advance(time.Minute)
		if err := srv.prune(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _ := srv.isRevoked(ctx, "at_1"); ok {
			t.Fatal("prune kept an expired revocation")
		}
	})
}

func FuzzParseFeedQuery(f *testing.F) {
	for _, s := range []string{"", "after=1&wait=30", "after=-1", "wait=31", "after=1&after=2", "after=%zz", "wait=0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		after, wait, err := parseFeedQuery(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		if after < 0 || wait < 0 || wait > maxFeedWait*time.Second {
			t.Fatalf("accepted after=%d wait=%s", after, wait)
		}
	})
}
