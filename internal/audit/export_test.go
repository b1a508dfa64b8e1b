package audit_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// exportedLog exports a verified log of tamperSize entries (one with a
// payload) to a new directory, with receipts, and stops the server: what
// follows is offline.
func exportedLog(t *testing.T, d store.Driver, out string) (keys testKeys) {
	t.Helper()
	ctx := context.Background()
	ts, _ := verifiedLog(t, storetest.Open(t, d))
	res, err := audit.Export(ctx, audit.HTTPSource(ts.client), out, audit.ExportOptions{
		VerifierKey: ts.keys.vkey, Receipts: []int64{0, 299, payloadAt, tamperSize - 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != tamperSize || res.Payloads != 1 || len(res.Receipts) != 4 || res.Tiles != len(tlog.NewTiles(8, 0, tamperSize)) {
		t.Fatalf("export: %+v", res)
	}
	ts.srv.Close()
	return ts.keys
}

func TestExportAndVerifyOffline(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "bundle")
			keys := exportedLog(t, d, dir)

			// The layout is the C2SP static tlog-tiles one.
			for _, name := range []string{"checkpoint", "key", "tile/0/000", "tile/0/001", "tile/0/002.p/88", "tile/1/000.p/2",
				"tile/entries/000", "tile/entries/002.p/88", "receipts/450.tlog-proof"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
					t.Errorf("bundle lacks %s: %v", name, err)
				}
			}
			res, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{VerifierKey: keys.vkey, Payloads: true})
			if err != nil {
				t.Fatalf("verify bundle: %v", err)
			}
			if res.Entries != tamperSize || res.Payloads != 1 {
				t.Fatalf("verify bundle: %+v", res)
			}

			// Every receipt verifies against the entry in the bundle.
			verifier, err := note.NewVerifier(keys.vkey)
			if err != nil {
				t.Fatal(err)
			}
			src, err := audit.OpenBundle(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			for _, i := range []int64{0, 299, payloadAt, tamperSize - 1} {
				text, err := os.ReadFile(filepath.Join(dir, audit.ReceiptPath(i)))
				if err != nil {
					t.Fatal(err)
				}
				r, err := audit.ParseReceipt(text)
				if err != nil {
					t.Fatal(err)
				}
				es, err := src.Entries(ctx, tamperSize, i, 1)
				if err != nil || len(es) != 1 {
					t.Fatalf("entry %d from the bundle: %v", i, err)
				}
				if err := audit.VerifyReceipt(r, es[0].Data, testOrigin, verifier); err != nil {
					t.Fatalf("receipt %d: %v", i, err)
				}
			}

			// The bundle's own key, trusted on first use, with a warning.
			var warned bool
			if _, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{Warn: func(string) { warned = true }}); err != nil || !warned {
				t.Fatalf("verify with the bundle's key: %v, warned %v", err, warned)
			}
			// Another key fails.
			if _, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{VerifierKey: newKeys(t).vkey}); err == nil {
				t.Fatal("verified with another key")
			}

			// A state file from the live log accepts the bundle of the same
			// checkpoint; one from a longer log refuses it as a rollback.
			statePath := filepath.Join(t.TempDir(), "state.json")
			if _, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{VerifierKey: keys.vkey, StatePath: statePath}); err != nil {
				t.Fatal(err)
			}
			if _, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{VerifierKey: keys.vkey, StatePath: statePath}); err != nil {
				t.Fatalf("second verification with state: %v", err)
			}
		})
	}
}

// bundleTamper changes an exported bundle.
type bundleTamper func(t *testing.T, dir string)

// editEntryInBundle flips a byte of entry idx inside its entry bundle.
func editEntryInBundle(idx int64, size int64) bundleTamper {
	return func(t *testing.T, dir string) {
		tile := tlog.Tile{H: 8, L: -1, N: idx >> 8, W: int(min(256, size-(idx>>8)<<8))}
		name := filepath.Join(dir, audit.TilePath(tile))
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for k := int64(0); k < idx&255; k++ {
			off += 2 + int(binary.BigEndian.Uint16(data[off:]))
		}
		n := int(binary.BigEndian.Uint16(data[off:]))
		data[off+2+n/2] ^= 1
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyTamperedBundle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		tamper    bundleTamper
		wantIndex int64
		wantMsg   string
	}{
		{"entry edited", editEntryInBundle(300, tamperSize), 300, "entry 300 does not match the log"},
		{"last entry edited", editEntryInBundle(tamperSize-1, tamperSize), tamperSize - 1, "does not match the log"},
		{"entry bundle removed", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "tile/entries/001")); err != nil {
				t.Fatal(err)
			}
		}, 256, "entry 256 is missing"},
		{"entry bundle truncated", func(t *testing.T, dir string) {
			name := filepath.Join(dir, "tile/entries/002.p/88")
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			n := int(binary.BigEndian.Uint16(data))
			if err := os.WriteFile(name, data[:2+n], 0o600); err != nil { // only entry 512 left
				t.Fatal(err)
			}
		}, 513, "entry 513 is missing"},
		{"payload edited", func(t *testing.T, dir string) {
			ents, err := os.ReadDir(filepath.Join(dir, "blobs"))
			if err != nil || len(ents) != 1 {
				t.Fatalf("blobs: %v", err)
			}
			if err := os.WriteFile(filepath.Join(dir, "blobs", ents[0].Name()), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, payloadAt, "refers to payload"},
		{"hash tile edited", func(t *testing.T, dir string) {
			name := filepath.Join(dir, "tile/0/001")
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			data[40] ^= 1 // the leaf hash of entry 257
			if err := os.WriteFile(name, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, -1, "hash tiles do not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "bundle")
			keys := exportedLog(t, store.SQLite, dir)
			tt.tamper(t, dir)
			_, err := audit.VerifyBundle(ctx, dir, audit.VerifyOptions{VerifierKey: keys.vkey, Payloads: true})
			if err == nil {
				t.Fatal("the tampered bundle verified")
			}
			t.Logf("verify: %v", err)
			var ee *audit.EntryError
			if tt.wantIndex >= 0 && (!errors.As(err, &ee) || ee.Index != tt.wantIndex) {
				t.Fatalf("want entry %d named: %v", tt.wantIndex, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestExportArchiveRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "audit.tar.gz")
	keys := exportedLog(t, store.SQLite, out)
	res, err := audit.VerifyBundle(ctx, out, audit.VerifyOptions{VerifierKey: keys.vkey, Payloads: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != tamperSize {
		t.Fatalf("verified %d entries", res.Entries)
	}
	// No temporary file is left beside the archive.
	ents, err := os.ReadDir(filepath.Dir(out))
	if err != nil || len(ents) != 1 {
		t.Fatalf("beside the archive: %v %v", ents, err)
	}
	// An existing archive is not overwritten.
	src := audit.HTTPSource(nil)
	if _, err := audit.Export(ctx, src, out, audit.ExportOptions{VerifierKey: keys.vkey}); err == nil {
		t.Fatal("export over an existing archive")
	}
}

func TestExportRefusesNonEmptyDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	appendAndCheckpoint(t, ts.client, 0, 3)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Export(ctx, audit.HTTPSource(ts.client), dir, audit.ExportOptions{VerifierKey: ts.keys.vkey}); err == nil {
		t.Fatal("exported into a non-empty directory")
	}
	if _, err := audit.Export(ctx, audit.HTTPSource(ts.client), filepath.Join(dir, "b"), audit.ExportOptions{VerifierKey: ts.keys.vkey, Receipts: []int64{3}}); err == nil {
		t.Fatal("a receipt beyond the checkpoint was accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed export left its directory: %v", err)
	}
	// A log whose checkpoint is signed by another key is not exported.
	if _, err := audit.Export(ctx, audit.HTTPSource(ts.client), filepath.Join(dir, "c"), audit.ExportOptions{VerifierKey: newKeys(t).vkey}); err == nil {
		t.Fatal("exported with the wrong key")
	}
}

// TestBundleReadsStayInside: a bundle cannot make the verifier read
// outside its directory, by symbolic link or archive member name.
func TestBundleReadsStayInside(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("o\n1\nAAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(secret, filepath.Join(dir, "checkpoint")); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(dir, "key")); err != nil {
		t.Fatal(err)
	}
	src, err := audit.OpenBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Checkpoint(ctx); err == nil {
		t.Fatal("read a checkpoint through an absolute symlink out of the bundle")
	}
	if _, err := src.Key(ctx); err == nil {
		t.Fatal("read a key through a relative symlink out of the bundle")
	}
	if _, err := src.Blob(ctx, "../secret"); err == nil {
		t.Fatal("read a payload by a path")
	}

	members := []struct {
		name     string
		typeflag byte
		body     string
	}{
		{"../escape", tar.TypeReg, "x"},
		{"/etc/passwd", tar.TypeReg, "x"},
		{"tile/../../escape", tar.TypeReg, "x"},
		{"checkpoint", tar.TypeSymlink, ""},
		{"unexpected-file", tar.TypeReg, "x"},
		{"tile/0/000", tar.TypeReg, "too short"},
	}
	for _, m := range members {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			archive := filepath.Join(t.TempDir(), "evil.tar.gz")
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			tw := tar.NewWriter(gz)
			hdr := &tar.Header{Name: m.name, Typeflag: m.typeflag, Mode: 0o600, Size: int64(len(m.body))}
			if m.typeflag == tar.TypeSymlink {
				hdr.Linkname = secret
			}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(m.body))
			tw.Close()
			gz.Close()
			if err := os.WriteFile(archive, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := audit.VerifyBundle(ctx, archive, audit.VerifyOptions{VerifierKey: newKeys(t).vkey})
			if err == nil {
				t.Fatal("an evil archive verified")
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(archive), "escape")); err == nil {
				t.Fatal("a member was written outside")
			}
		})
	}
}
