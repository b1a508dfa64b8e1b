package audit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestReceiptRoundTripAndTamper(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ts := newTestServer(t, db, newKeys(t), audit.APIConfig{})
		appendAndCheckpoint(t, ts.client, 0, 300)
		verifier, err := note.NewVerifier(ts.keys.vkey)
		if err != nil {
			t.Fatal(err)
		}
		r, entry, err := audit.Prove(ctx, ts.client, 137, testOrigin, verifier)
		if err != nil {
			t.Fatal(err)
		}
		text := r.Marshal()
		if !bytes.HasPrefix(text, []byte("c2sp.org/tlog-proof@v1\nindex 137\n")) {
			t.Fatalf("receipt starts %q", text[:40])
		}
		parsed, err := audit.ParseReceipt(text)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(audit.FormatReceipt(parsed.Index, parsed.Proof, parsed.Checkpoint), text) {
			t.Fatal("format(parse(receipt)) differs")
		}
		if err := audit.VerifyReceipt(parsed, entry, testOrigin, verifier); err != nil {
			t.Fatalf("verify receipt: %v", err)
		}
		// The proof also checks with transparency-dev's verifier.
		ck, err := audit.ParseCheckpoint(parsed.Checkpoint, testOrigin, verifier)
		if err != nil {
			t.Fatal(err)
		}
		leaf := tlog.RecordHash(entry)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 137, uint64(ck.Size), leaf[:], hashSlices(parsed.Proof), ck.Root[:]); err != nil {
			t.Fatalf("proof.VerifyInclusion: %v", err)
		}

		otherEntry := readEntry(t, db, 138)
		otherKeys := newKeys(t)
		otherVerifier, err := note.NewVerifier(otherKeys.vkey)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name     string
			mutate   func(r *audit.Receipt) *audit.Receipt
			entry    []byte
			verifier note.Verifier
			origin   string
		}{
			{"another entry", nil, otherEntry, verifier, testOrigin},
			{"entry with one byte changed", nil, flipByte(entry), verifier, testOrigin},
			{"another index", func(r *audit.Receipt) *audit.Receipt { r.Index = 138; return r }, entry, verifier, testOrigin},
			{"index beyond the tree", func(r *audit.Receipt) *audit.Receipt { r.Index = 1 << 40; return r }, entry, verifier, testOrigin},
			{"modified proof line", func(r *audit.Receipt) *audit.Receipt { r.Proof[3][7] ^= 1; return r }, entry, verifier, testOrigin},
			{"proof line dropped", func(r *audit.Receipt) *audit.Receipt { r.Proof = r.Proof[1:]; return r }, entry, verifier, testOrigin},
			{"proof line added", func(r *audit.Receipt) *audit.Receipt { r.Proof = append(r.Proof, tlog.Hash{}); return r }, entry, verifier, testOrigin},
			{"checkpoint signed by another key", func(r *audit.Receipt) *audit.Receipt {
				r.Checkpoint = signCheckpoint(t, otherKeys.skey, ck.Size, ck.Root)
				return r
			}, entry, verifier, testOrigin},
			{"verified with another key", nil, entry, otherVerifier, testOrigin},
			{"another origin", nil, entry, verifier, "bulwark.test/elsewhere"},
			{"checkpoint of another root", func(r *audit.Receipt) *audit.Receipt {
				root := ck.Root
				root[0] ^= 1
				r.Checkpoint = signCheckpoint(t, ts.keys.skey, ck.Size, root)
				return r
			}, entry, verifier, testOrigin},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r, err := audit.ParseReceipt(text) // a fresh copy
				if err != nil {
					t.Fatal(err)
				}
				if tt.mutate != nil {
					r = tt.mutate(r)
					// What is verified is what a holder would parse.
					if r, err = audit.ParseReceipt(r.Marshal()); err != nil {
						t.Fatal(err)
					}
				}
				if err := audit.VerifyReceipt(r, tt.entry, tt.origin, tt.verifier); err == nil {
					t.Fatal("the receipt verified")
				}
			})
		}

		// A text edit of one proof line breaks the receipt too.
		lines := strings.Split(string(text), "\n")
		b, _ := base64.StdEncoding.DecodeString(lines[2])
		b[0] ^= 0x80
		lines[2] = base64.StdEncoding.EncodeToString(b)
		edited, err := audit.ParseReceipt([]byte(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyReceipt(edited, entry, testOrigin, verifier); err == nil {
			t.Fatal("an edited receipt verified")
		}

		// Prove refuses entries beyond the checkpoint.
		appendHTTP(t, ts.client, 300, 1)
		if _, _, err := audit.Prove(ctx, ts.client, 300, testOrigin, verifier); err == nil {
			t.Fatal("proved an entry not yet in a checkpoint")
		}
		// And names an entry the log lost.
		if _, err := db.ExecContext(ctx, "DELETE FROM audit_entries WHERE idx = ?", 5); err != nil {
			t.Fatal(err)
		}
		_, _, err = audit.Prove(ctx, ts.client, 5, testOrigin, verifier)
		var ee *audit.EntryError
		if !errors.As(err, &ee) || ee.Index != 5 {
			t.Fatalf("prove a deleted entry: %v", err)
		}
		// And an entry the log altered.
		writeEntry(t, db, 6, flipByte(readEntry(t, db, 6)))
		_, _, err = audit.Prove(ctx, ts.client, 6, testOrigin, verifier)
		if !errors.As(err, &ee) || ee.Index != 6 {
			t.Fatalf("prove an altered entry: %v", err)
		}
	})
}

func hashSlices(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// TestReceiptFormat pins the C2SP tlog-proof text, extra line included.
func TestReceiptFormat(t *testing.T) {
	t.Parallel()
	var h1, h2 tlog.Hash
	for i := range h1 {
		h1[i], h2[i] = byte(i), byte(255-i)
	}
	ckpt := []byte("bulwark.test/audit\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— bulwark.test/audit abcd\n")
	got := audit.FormatReceipt(4, tlog.RecordProof{h1, h2}, ckpt)
	want := "c2sp.org/tlog-proof@v1\nindex 4\n" +
		base64.StdEncoding.EncodeToString(h1[:]) + "\n" + base64.StdEncoding.EncodeToString(h2[:]) + "\n\n" + string(ckpt)
	if string(got) != want {
		t.Fatalf("FormatReceipt:\n%s\nwant:\n%s", got, want)
	}
	withExtra := "c2sp.org/tlog-proof@v1\nextra aGVsbG8=\nindex 0\n\n" + string(ckpt)
	r, err := audit.ParseReceipt([]byte(withExtra))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Extra) != "hello" || r.Index != 0 || len(r.Proof) != 0 || !bytes.Equal(r.Checkpoint, ckpt) {
		t.Fatalf("parsed %+v", r)
	}
	if string(r.Marshal()) != withExtra {
		t.Fatal("a receipt with extra data does not round-trip")
	}
}

func TestParseReceiptIsStrict(t *testing.T) {
	t.Parallel()
	hash := base64.StdEncoding.EncodeToString(make([]byte, 32))
	ckpt := "o\n1\n" + hash + "\n\n— o sig\n"
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"wrong header", "c2sp.org/tlog-proof@v2\nindex 0\n\n" + ckpt},
		{"header with CR", "c2sp.org/tlog-proof@v1\r\nindex 0\n\n" + ckpt},
		{"no index", "c2sp.org/tlog-proof@v1\n" + hash + "\n\n" + ckpt},
		{"index with leading zero", "c2sp.org/tlog-proof@v1\nindex 07\n\n" + ckpt},
		{"negative index", "c2sp.org/tlog-proof@v1\nindex -1\n\n" + ckpt},
		{"index with plus", "c2sp.org/tlog-proof@v1\nindex +1\n\n" + ckpt},
		{"index overflow", "c2sp.org/tlog-proof@v1\nindex 99999999999999999999\n\n" + ckpt},
		{"index with space", "c2sp.org/tlog-proof@v1\nindex  1\n\n" + ckpt},
		{"extra after index", "c2sp.org/tlog-proof@v1\nindex 1\nextra aGVsbG8=\n\n" + ckpt},
		{"empty extra", "c2sp.org/tlog-proof@v1\nextra \nindex 1\n\n" + ckpt},
		{"extra not base64", "c2sp.org/tlog-proof@v1\nextra !!!!\nindex 1\n\n" + ckpt},
		{"short hash", "c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\n" + ckpt},
		{"unpadded hash", "c2sp.org/tlog-proof@v1\nindex 1\n" + strings.TrimRight(hash, "=") + "\n\n" + ckpt},
		{"hash with CR", "c2sp.org/tlog-proof@v1\nindex 1\n" + hash + "\r\n\n" + ckpt},
		{"url-safe base64", "c2sp.org/tlog-proof@v1\nindex 1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)) + "\n\n" + ckpt},
		{"no empty line", "c2sp.org/tlog-proof@v1\nindex 1\n" + hash + "\n"},
		{"no checkpoint", "c2sp.org/tlog-proof@v1\nindex 1\n" + hash + "\n\n"},
		{"checkpoint without final newline", "c2sp.org/tlog-proof@v1\nindex 1\n\n" + strings.TrimSuffix(ckpt, "\n")},
		{"65 hashes", "c2sp.org/tlog-proof@v1\nindex 1\n" + strings.Repeat(hash+"\n", 65) + "\n" + ckpt},
		{"too large", "c2sp.org/tlog-proof@v1\nindex 1\n\n" + ckpt + strings.Repeat("x", 80<<10) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if r, err := audit.ParseReceipt([]byte(tt.in)); err == nil {
				t.Fatalf("parsed %+v", r)
			}
		})
	}
	// 64 hashes is the most, and fine.
	if _, err := audit.ParseReceipt([]byte("c2sp.org/tlog-proof@v1\nindex 1\n" + strings.Repeat(hash+"\n", 64) + "\n" + ckpt)); err != nil {
		t.Fatalf("64 hashes: %v", err)
	}
}
