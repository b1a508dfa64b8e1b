package audit

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// An exported bundle is a static C2SP tlog-tiles tree, verifiable offline:
//
//	checkpoint                      the signed checkpoint (written last)
//	key                             the log's verifier key
//	tile/<L>/<N>[.p/<W>]            every hash tile of the tree
//	tile/entries/<N>[.p/<W>]        every entry, in entry bundles
//	blobs/<sha256>                  payloads of oversized events
//	receipts/<index>.tlog-proof     receipts asked for at export
//
// A name ending in .tar.gz (or .tgz) is the same tree as a gzipped tar.
const (
	bundleCheckpoint = "checkpoint"
	bundleKey        = "key"
	bundleBlobs      = "blobs"
	bundleReceipts   = "receipts"
)

// maxArchiveBytes bounds what extracting one bundle archive may write.
const maxArchiveBytes = 64 << 30

// IsArchivePath reports whether a bundle path names a .tar.gz archive
// rather than a directory.
func IsArchivePath(p string) bool {
	return strings.HasSuffix(p, ".tar.gz") || strings.HasSuffix(p, ".tgz")
}

// ExportOptions configure Export.
type ExportOptions struct {
	// VerifierKey is the log's signed-note verifier key (required): the
	// checkpoint is checked with it and it is written to the bundle.
	VerifierKey string
	// Origin is the log's origin; "" means the key's name.
	Origin string
	// Receipts lists entries to write receipts for.
	Receipts []int64
	// Progress, if set, is called as entries are exported.
	Progress func(done, total int64)
}

// ExportResult describes a written bundle.
type ExportResult struct {
	Checkpoint *Checkpoint
	Entries    int64
	Tiles      int
	Payloads   int
	Receipts   []string // bundle paths of the receipts written
}

// Export writes the log read from src, up to its latest checkpoint, as a
// bundle at out: a new or empty directory, or a .tar.gz file that must not
// exist. Verify the result with VerifyBundle.
func Export(ctx context.Context, src Source, out string, opts ExportOptions) (res *ExportResult, err error) {
	if opts.VerifierKey == "" {
		return nil, errors.New("export: no verifier key")
	}
	verifier, err := note.NewVerifier(opts.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	origin := opts.Origin
	if origin == "" {
		origin = verifier.Name()
	}
	// The output first: a bad path fails before any work.
	w, err := newBundleWriter(out)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	ck, err := fetchCheckpoint(ctx, src, origin, verifier)
	if err != nil {
		return nil, err
	}
	wanted := make(map[int64][]byte, len(opts.Receipts))
	for _, i := range opts.Receipts {
		if i < 0 || i >= ck.Size {
			return nil, fmt.Errorf("receipt for entry %d: the checkpoint has %d entries", i, ck.Size)
		}
		wanted[i] = nil
	}
	res = &ExportResult{Checkpoint: ck}
	if err := w.write(bundleKey, []byte(strings.TrimSpace(opts.VerifierKey)+"\n")); err != nil {
		return nil, err
	}

	// Hash tiles.
	all := tlog.NewTiles(TileHeight, 0, ck.Size)
	for start := 0; start < len(all); start += 64 {
		batch := all[start:min(start+64, len(all))]
		data, err := src.ReadTiles(ctx, batch)
		if err != nil {
			return nil, fmt.Errorf("read hash tiles: %w", err)
		}
		for i, t := range batch {
			if len(data[i]) != t.W*tlog.HashSize {
				return nil, fmt.Errorf("tile %s: %d bytes, want %d", TilePath(t), len(data[i]), t.W*tlog.HashSize)
			}
			if err := w.write(TilePath(t), data[i]); err != nil {
				return nil, err
			}
		}
	}
	res.Tiles = len(all)

	// Entry bundles and payloads.
	var bundle []byte
	seen := make(map[string]bool)
	err = streamEntries(ctx, src, ck.Size, opts.Progress, func(e Entry) error {
		if len(e.Data) > MaxEntryBytes {
			return &EntryError{Index: e.Index, Reason: fmt.Sprintf("is %d bytes, more than an entry can hold", len(e.Data))}
		}
		bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(e.Data)))
		bundle = append(bundle, e.Data...)
		if _, ok := wanted[e.Index]; ok {
			wanted[e.Index] = e.Data
		}
		if ref, ok := payloadRef(e.Data); ok && !seen[ref.SHA256] {
			data, err := exportPayload(ctx, src, e.Index, ref)
			if err != nil {
				return err
			}
			if err := w.write(bundleBlobs+"/"+ref.SHA256, data); err != nil {
				return err
			}
			seen[ref.SHA256] = true
			res.Payloads++
		}
		if (e.Index+1)%(1<<TileHeight) == 0 || e.Index+1 == ck.Size {
			t := leafTile(ck.Size, e.Index)
			t.L = -1
			if err := w.write(TilePath(t), bundle); err != nil {
				return err
			}
			bundle = bundle[:0]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Entries = ck.Size

	// Receipts, proved from tiles authenticated against the checkpoint.
	if len(wanted) > 0 {
		hr := tlog.TileHashReader(tlog.Tree{N: ck.Size, Hash: ck.Root}, sourceTiles(ctx, src))
		idx := make([]int64, 0, len(wanted))
		for i := range wanted {
			idx = append(idx, i)
		}
		sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
		for _, i := range idx {
			p, err := tlog.ProveRecord(ck.Size, i, hr)
			if err != nil {
				return nil, fmt.Errorf("prove entry %d: %w", i, err)
			}
			r := &Receipt{Index: i, Proof: p, Checkpoint: ck.Note}
			if err := VerifyReceipt(r, wanted[i], origin, verifier); err != nil {
				return nil, &EntryError{Index: i, Err: ErrRootMismatch, Reason: "does not match the log: " + err.Error()}
			}
			name := ReceiptPath(i)
			if err := w.write(name, r.Marshal()); err != nil {
				return nil, err
			}
			res.Receipts = append(res.Receipts, name)
		}
	}

	// The checkpoint last: a bundle without one is incomplete.
	if err := w.write(bundleCheckpoint, ck.Note); err != nil {
		return nil, err
	}
	if err := w.commit(); err != nil {
		return nil, err
	}
	return res, nil
}

// ReceiptPath is the bundle path of the receipt for entry index.
func ReceiptPath(index int64) string {
	return bundleReceipts + "/" + strconv.FormatInt(index, 10) + ReceiptExt
}

func exportPayload(ctx context.Context, src Source, index int64, ref PayloadRef) ([]byte, error) {
	p := payloadCheck{index: index, ref: ref}
	if !validSHA256Hex(ref.SHA256) {
		return nil, checkPayload(ctx, src, p)
	}
	data, err := src.Blob(ctx, ref.SHA256)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, &EntryError{Index: index, Reason: fmt.Sprintf("refers to payload %s, which is missing", ref.SHA256)}
		}
		return nil, fmt.Errorf("entry %d: fetch payload %s: %w", index, ref.SHA256, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != ref.SHA256 || len(data) != ref.Size {
		return nil, &EntryError{Index: index, Reason: fmt.Sprintf("refers to payload %s of %d bytes, which the log does not hold", ref.SHA256, ref.Size)}
	}
	return data, nil
}

// bundleWriter writes the files of a bundle.
type bundleWriter interface {
	write(name string, data []byte) error
	commit() error
	abort()
}

func newBundleWriter(out string) (bundleWriter, error) {
	if out == "" {
		return nil, errors.New("export: no output path")
	}
	if IsArchivePath(out) {
		return newTarWriter(out)
	}
	return newDirWriter(out)
}

// dirWriter writes a bundle into a new or empty directory, through an
// os.Root so that no name can land outside it.
type dirWriter struct {
	dir     string
	created bool
	root    *os.Root
}

func newDirWriter(dir string) (*dirWriter, error) {
	created := false
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		created = true
	case err != nil:
		return nil, fmt.Errorf("export: %w", err)
	case len(ents) > 0:
		return nil, fmt.Errorf("export: %s is not empty", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return &dirWriter{dir: dir, created: created, root: root}, nil
}

func (d *dirWriter) write(name string, data []byte) error {
	if dir := path.Dir(name); dir != "." {
		if err := d.root.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := d.root.WriteFile(name, data, 0o600); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func (d *dirWriter) commit() error { return d.root.Close() }

func (d *dirWriter) abort() {
	d.root.Close()
	if d.created {
		os.RemoveAll(d.dir)
	}
}

// tarWriter writes a bundle as a gzipped tar, to a temporary file renamed
// into place on commit.
type tarWriter struct {
	out string
	f   *os.File
	gz  *gzip.Writer
	tw  *tar.Writer
}

func newTarWriter(out string) (*tarWriter, error) {
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("export: %s exists", out)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	gz := gzip.NewWriter(f)
	return &tarWriter{out: out, f: f, gz: gz, tw: tar.NewWriter(gz)}, nil
}

// bundleModTime is the time stamped on archive members, so that the same
// log exports to the same bytes.
var bundleModTime = time.Unix(0, 0).UTC()

func (t *tarWriter) write(name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: bundleModTime, Format: tar.FormatPAX}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := t.tw.Write(data); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func (t *tarWriter) commit() error {
	err := errors.Join(t.tw.Close(), t.gz.Close(), t.f.Sync(), t.f.Close())
	if err == nil {
		err = os.Rename(t.f.Name(), t.out)
	}
	if err != nil {
		os.Remove(t.f.Name())
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func (t *tarWriter) abort() {
	t.f.Close()
	os.Remove(t.f.Name())
}

// BundleSource reads an exported bundle directory. Every read goes through
// an os.Root: no path, symbolic link included, can lead outside the
// directory. It is safe for concurrent use.
type BundleSource struct {
	root *os.Root

	mu      sync.Mutex
	cacheT  tlog.Tile
	cacheOK bool
	cache   [][]byte
}

var (
	_ Source    = (*BundleSource)(nil)
	_ KeySource = (*BundleSource)(nil)
)

// OpenBundle opens a bundle directory. Close it when done.
func OpenBundle(dir string) (*BundleSource, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	return &BundleSource{root: root}, nil
}

// Close releases the directory.
func (b *BundleSource) Close() error { return b.root.Close() }

func (b *BundleSource) readFile(name string, limit int64) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("bundle: invalid path %q", name)
	}
	f, err := b.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("bundle: %s is not a regular file", name)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("bundle: %s is %d bytes, more than %d", name, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("bundle: read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("bundle: %s is more than %d bytes", name, limit)
	}
	return data, nil
}

// Checkpoint implements Source.
func (b *BundleSource) Checkpoint(context.Context) ([]byte, error) {
	return b.readFile(bundleCheckpoint, maxCheckpointBytes)
}

// Key implements KeySource: the key the bundle carries, which proves
// nothing unless it is checked against a key you trust.
func (b *BundleSource) Key(context.Context) (string, error) {
	k, err := b.readFile(bundleKey, maxKeyBytes)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(k)), nil
}

// ReadTiles implements Source.
func (b *BundleSource) ReadTiles(_ context.Context, tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.H != TileHeight || t.L < 0 || t.W < 1 || t.W > 1<<TileHeight {
			return nil, fmt.Errorf("bundle: %+v is not a hash tile", t)
		}
		want := t.W * tlog.HashSize
		data, err := b.readFile(TilePath(t), int64(want))
		if err != nil {
			return nil, err
		}
		if len(data) != want {
			return nil, fmt.Errorf("bundle: %s is %d bytes, want %d", TilePath(t), len(data), want)
		}
		out[i] = data
	}
	return out, nil
}

// Entries implements Source: the entries come from the entry bundles.
func (b *BundleSource) Entries(_ context.Context, treeSize, start int64, limit int) ([]Entry, error) {
	end := min(start+int64(limit), treeSize)
	var out []Entry
	for i := start; i < end; {
		t := leafTile(treeSize, i)
		t.L = -1
		first := t.N << TileHeight
		entries, err := b.entryBundle(t)
		if err != nil {
			return nil, err
		}
		for ; i < min(end, first+int64(t.W)); i++ {
			if k := i - first; k < int64(len(entries)) {
				out = append(out, Entry{Index: i, Data: entries[k]})
			}
		}
	}
	return out, nil
}

// entryBundle reads and splits an entry bundle; a missing one is empty.
func (b *BundleSource) entryBundle(t tlog.Tile) ([][]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cacheOK && b.cacheT == t {
		return b.cache, nil
	}
	data, err := b.readFile(TilePath(t), maxEntryBundleBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	entries, err := SplitEntryBundle(data)
	if err != nil {
		return nil, fmt.Errorf("bundle: %s: %w", TilePath(t), err)
	}
	if len(entries) > t.W {
		return nil, fmt.Errorf("bundle: %s holds %d entries, the tree has %d there", TilePath(t), len(entries), t.W)
	}
	b.cacheT, b.cache, b.cacheOK = t, entries, true
	return entries, nil
}

// Blob implements Source.
func (b *BundleSource) Blob(_ context.Context, sha256Hex string) ([]byte, error) {
	if !validSHA256Hex(sha256Hex) {
		return nil, fmt.Errorf("payload hash %q: want 64 lowercase hex digits", sha256Hex)
	}
	return b.readFile(bundleBlobs+"/"+sha256Hex, maxBlobBytes)
}

// VerifyBundle verifies an exported bundle, a directory or a .tar.gz,
// offline, with the same checks as Verify.
func VerifyBundle(ctx context.Context, bundle string, opts VerifyOptions) (*VerifyResult, error) {
	dir := bundle
	if IsArchivePath(bundle) {
		tmp, err := os.MkdirTemp("", "bulwark-bundle-*")
		if err != nil {
			return nil, fmt.Errorf("verify bundle: %w", err)
		}
		defer os.RemoveAll(tmp)
		if err := extractBundle(bundle, tmp); err != nil {
			return nil, err
		}
		dir = tmp
	}
	src, err := OpenBundle(dir)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return Verify(ctx, src, opts)
}

// bundleFileLimit returns the largest size a file of a bundle may have,
// or an error for a name that is no part of a bundle.
func bundleFileLimit(name string) (int64, error) {
	switch {
	case name == bundleCheckpoint:
		return maxCheckpointBytes, nil
	case name == bundleKey:
		return maxKeyBytes, nil
	case strings.HasPrefix(name, "tile/"):
		t, err := ParseTilePath(name)
		if err != nil {
			return 0, err
		}
		if t.L < 0 {
			return maxEntryBundleBytes, nil
		}
		return int64(t.W * tlog.HashSize), nil
	case strings.HasPrefix(name, bundleBlobs+"/") && validSHA256Hex(strings.TrimPrefix(name, bundleBlobs+"/")):
		return maxBlobBytes, nil
	case strings.HasPrefix(name, bundleReceipts+"/") && strings.HasSuffix(name, ReceiptExt):
		if _, err := parseDecimal(strings.TrimSuffix(strings.TrimPrefix(name, bundleReceipts+"/"), ReceiptExt)); err != nil {
			return 0, err
		}
		return maxReceiptBytes, nil
	}
	return 0, fmt.Errorf("%q is no part of a bundle", name)
}

// extractBundle unpacks a bundle archive into dir. It accepts only
// regular files and directories with bundle names, each within its size
// bound: nothing can be written outside dir.
func extractBundle(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("open bundle: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", archive, err)
	}
	defer gz.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open bundle: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(gz)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("bundle %s: %w", archive, err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !fs.ValidPath(name) || strings.Contains(name, `\`) {
			return fmt.Errorf("bundle %s: refusing member %q", archive, printable(hdr.Name, 200))
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("bundle %s: %w", archive, err)
			}
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("bundle %s: refusing member %q of type %q", archive, printable(name, 200), hdr.Typeflag)
		}
		limit, err := bundleFileLimit(name)
		if err != nil {
			return fmt.Errorf("bundle %s: refusing member: %w", archive, err)
		}
		if hdr.Size < 0 || hdr.Size > limit {
			return fmt.Errorf("bundle %s: member %s is %d bytes, more than %d", archive, name, hdr.Size, limit)
		}
		if total += hdr.Size; total > maxArchiveBytes {
			return fmt.Errorf("bundle %s: more than %d bytes", archive, int64(maxArchiveBytes))
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o700); err != nil {
				return fmt.Errorf("bundle %s: %w", archive, err)
			}
		}
		out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", archive, err)
		}
		_, err = io.Copy(out, io.LimitReader(tr, hdr.Size))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("bundle %s: %w", archive, err)
		}
	}
}
