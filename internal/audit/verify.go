package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/devinfo"
)

// Source is a log as the verifier reads it: over HTTP (HTTPSource) or from
// an exported bundle (OpenBundle). Everything a Source returns is
// untrusted; the verifier checks it against the signed checkpoint.
type Source interface {
	// Checkpoint returns the latest signed checkpoint note.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Entries returns the entries of the tree of size treeSize whose
	// indexes lie in [start, start+limit), in index order. Entries the
	// source does not have are left out; the verifier names them.
	Entries(ctx context.Context, treeSize, start int64, limit int) ([]Entry, error)
	// ReadTiles returns the data of C2SP hash tiles (L >= 0).
	ReadTiles(ctx context.Context, tiles []tlog.Tile) ([][]byte, error)
	// Blob returns the payload of an oversized event by its hex SHA-256.
	Blob(ctx context.Context, sha256Hex string) ([]byte, error)
}

// KeySource is a Source that publishes the log's verifier key, for trust
// on first use.
type KeySource interface {
	Key(ctx context.Context) (string, error)
}

// ConsistencyProver is a Source that serves consistency proofs. For other
// sources the verifier computes the proof from tiles authenticated against
// the new checkpoint.
type ConsistencyProver interface {
	ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error)
}

// Verification failures a caller can test for with errors.Is. A fork is
// ErrFork (see ForkError); a bad entry is an *EntryError.
var (
	ErrRollback          = errors.New("the audit log shrank: it was rolled back")
	ErrRootMismatch      = errors.New("the entries do not hash to the signed root")
	ErrKeyChanged        = errors.New("the audit log's verifier key changed")
	ErrTilesInconsistent = errors.New("the log's hash tiles do not match its signed checkpoint")
	ErrEntryMissing      = errors.New("an entry is missing")
)

// EntryError names the first entry that failed verification.
type EntryError struct {
	Index  int64
	Reason string // e.g. "is missing", "does not match the log: ..."
	Err    error  // an underlying sentinel, if any
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %d %s", e.Index, e.Reason) }

// Unwrap returns the underlying sentinel.
func (e *EntryError) Unwrap() error { return e.Err }

// ForkError is a checkpoint that cannot be on the same log as one verified
// before: the same size with another root, or a larger tree that is not an
// extension of the old one. Whoever holds the log's key signed both, so it
// is proof that the log showed different histories. It matches ErrFork.
type ForkError struct {
	PrevSize int64
	PrevRoot tlog.Hash
	Size     int64
	Root     tlog.Hash
	Detail   string
}

func (e *ForkError) Error() string {
	if e.Size == e.PrevSize {
		return fmt.Sprintf("audit log fork: the log signs size %d with root %s, but root %s was verified before for the same size",
			e.Size, e.Root, e.PrevRoot)
	}
	return fmt.Sprintf("audit log fork: the checkpoint of size %d (root %s) does not extend the size %d (root %s) verified before: %s",
		e.Size, e.Root, e.PrevSize, e.PrevRoot, e.Detail)
}

// Is makes errors.Is(err, ErrFork) true.
func (e *ForkError) Is(target error) bool { return target == ErrFork }

// VerifyOptions configure Verify. Only what is needed to find the key is
// required.
type VerifyOptions struct {
	// Origin is the log's checkpoint origin; "" means the key's name.
	Origin string
	// VerifierKey is the signed-note verifier key. "" means the key pinned
	// in the state file or, failing that, the key the source publishes,
	// trusted on first use (with a warning) and pinned.
	VerifierKey string
	// StatePath is the witness state file: the last verified checkpoint and
	// the pinned key. "" keeps no state.
	StatePath string
	// Payloads also fetches the payload of every oversized event and checks
	// its SHA-256 and size.
	Payloads bool
	// Progress, if set, is called as entries are verified.
	Progress func(done, total int64)
	// Warn, if set, receives warnings meant for a human.
	Warn func(msg string)
	// Now is the clock for the state file; nil means time.Now.
	Now func() time.Time
}

// VerifyResult describes a successful verification.
type VerifyResult struct {
	Origin      string
	VerifierKey string
	Checkpoint  *Checkpoint
	Entries     int64 // entries recomputed and matched
	Payloads    int   // payloads checked
	// Previous is the checkpoint verified before, from the state file; the
	// new one was proved consistent with it.
	Previous *Checkpoint
	// TrustedOnFirstUse is set when the key came from the source itself.
	TrustedOnFirstUse bool
	// StateSaved is set when the state file was updated.
	StateSaved bool
}

// Summary is a one-line human description of the result.
func (r *VerifyResult) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified %d entries, checkpoint size %d root %s", r.Entries, r.Checkpoint.Size,
		base64.StdEncoding.EncodeToString(r.Checkpoint.Root[:]))
	if r.Payloads > 0 {
		fmt.Fprintf(&b, ", %d payloads", r.Payloads)
	}
	if r.Previous != nil {
		fmt.Fprintf(&b, ", consistent with previous size %d", r.Previous.Size)
	} else {
		b.WriteString(", no previous checkpoint to compare")
	}
	return b.String()
}

// Verify checks a log end to end: the checkpoint's signature; that it
// extends the checkpoint verified before (from the state file), by a
// consistency proof; and that the entries, every one, hash to the signed
// root — both leaf by leaf against hash tiles authenticated with
// tlog.TileHashReader and by recomputing the whole tree from the entries
// alone. The first bad entry is named in an *EntryError. The state file is
// updated only when everything verified.
func Verify(ctx context.Context, src Source, opts VerifyOptions) (*VerifyResult, error) {
	if src == nil {
		return nil, errors.New("verify: no source")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	var st *State
	if opts.StatePath != "" {
		var err error
		if st, err = LoadState(opts.StatePath); err != nil {
			return nil, err
		}
	}
	vkey, tofu, err := resolveKey(ctx, src, opts.VerifierKey, st)
	if err != nil {
		return nil, err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("verifier key %q: %w", vkey, err)
	}
	origin := opts.Origin
	if origin == "" {
		origin = verifier.Name()
	}
	if st != nil && st.Origin != "" && st.Origin != origin {
		return nil, fmt.Errorf("state file %s is for the log %q, not %q", opts.StatePath, st.Origin, origin)
	}
	if tofu {
		where := "not pinned: no state file"
		if opts.StatePath != "" {
			where = "pinning it in " + opts.StatePath
		}
		warn(fmt.Sprintf("no verifier key given: trusting the key the log publishes on first use (%s): %s; "+
			"compare it with the key your operator published", where, vkey))
	}

	ck, err := fetchCheckpoint(ctx, src, origin, verifier)
	if err != nil {
		return nil, err
	}
	tiles := sourceTiles(ctx, src)
	res := &VerifyResult{Origin: origin, VerifierKey: vkey, Checkpoint: ck, TrustedOnFirstUse: tofu}
	if st != nil && st.Checkpoint != "" {
		prev, err := ParseCheckpoint([]byte(st.Checkpoint), origin, verifier)
		if err != nil {
			return nil, fmt.Errorf("state file %s: %w", opts.StatePath, err)
		}
		if err := checkExtends(ctx, src, tiles, prev, ck); err != nil {
			return nil, err
		}
		res.Previous = prev
	}
	if res.Entries, res.Payloads, err = checkEntries(ctx, src, tiles, ck, opts); err != nil {
		return nil, err
	}
	if opts.StatePath != "" {
		if err := saveState(opts.StatePath, origin, vkey, ck, opts.Now()); err != nil {
			return nil, err
		}
		res.StateSaved = true
	}
	return res, nil
}

// ResolveVerifierKey returns the key to verify a log with: given, else the
// one pinned in the state file at statePath, else the one src publishes
// (tofu set: the caller should warn). A given or served key that differs
// from the pinned one is ErrKeyChanged.
func ResolveVerifierKey(ctx context.Context, src Source, given, statePath string) (key string, tofu bool, err error) {
	var st *State
	if statePath != "" {
		if st, err = LoadState(statePath); err != nil {
			return "", false, err
		}
	}
	return resolveKey(ctx, src, given, st)
}

func resolveKey(ctx context.Context, src Source, given string, st *State) (string, bool, error) {
	given = strings.TrimSpace(given)
	pinned := ""
	if st != nil {
		pinned = st.VerifierKey
	}
	switch {
	case given != "":
		if pinned != "" && pinned != given {
			return "", false, fmt.Errorf("%w: the state file pins %s, but %s was given; "+
				"if the key was rotated on purpose, move the state file away", ErrKeyChanged, pinned, given)
		}
		return given, false, nil
	case pinned != "":
		if ks, ok := src.(KeySource); ok {
			served, err := ks.Key(ctx)
			if err != nil {
				return "", false, fmt.Errorf("fetch the log's verifier key: %w", err)
			}
			if served != pinned {
				return "", false, fmt.Errorf("%w: the log now publishes %s, but %s was pinned on first use", ErrKeyChanged, served, pinned)
			}
		}
		return pinned, false, nil
	default:
		ks, ok := src.(KeySource)
		if !ok {
			return "", false, errors.New("no verifier key: pass the log's key (--key)")
		}
		served, err := ks.Key(ctx)
		if err != nil {
			return "", false, fmt.Errorf("fetch the log's verifier key: %w", err)
		}
		if _, err := note.NewVerifier(served); err != nil {
			return "", false, fmt.Errorf("the log publishes an invalid verifier key: %w", err)
		}
		return served, true, nil
	}
}

// checkExtends checks that ck is the checkpoint verified before (prev) or
// a later tree that contains it.
func checkExtends(ctx context.Context, src Source, tiles *tileCache, prev, ck *Checkpoint) error {
	switch {
	case ck.Size == prev.Size:
		if ck.Root != prev.Root {
			return &ForkError{PrevSize: prev.Size, PrevRoot: prev.Root, Size: ck.Size, Root: ck.Root}
		}
		return nil
	case ck.Size < prev.Size:
		return fmt.Errorf("%w: its checkpoint has %d entries, but %d were verified before", ErrRollback, ck.Size, prev.Size)
	case prev.Size == 0:
		return nil // the empty tree is a prefix of every tree
	}
	var (
		proof tlog.TreeProof
		err   error
	)
	if p, ok := src.(ConsistencyProver); ok {
		proof, err = p.ConsistencyProof(ctx, prev.Size, ck.Size)
	} else {
		proof, err = tlog.ProveTree(ck.Size, prev.Size, tlog.TileHashReader(tlog.Tree{N: ck.Size, Hash: ck.Root}, tiles))
	}
	if err != nil {
		return fmt.Errorf("consistency proof from size %d to %d: %w", prev.Size, ck.Size, err)
	}
	if err := tlog.CheckTree(proof, ck.Size, ck.Root, prev.Size, prev.Root); err != nil {
		return &ForkError{PrevSize: prev.Size, PrevRoot: prev.Root, Size: ck.Size, Root: ck.Root,
			Detail: "the consistency proof fails: " + err.Error()}
	}
	return nil
}

// fetchError marks a tile that could not be read at all, as opposed to one
// that was read and failed authentication.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetchCheckpoint fetches the source's latest checkpoint and verifies its
// signature and origin.
func fetchCheckpoint(ctx context.Context, src Source, origin string, verifier note.Verifier) (*Checkpoint, error) {
	raw, err := src.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch checkpoint: %w", err)
	}
	return ParseCheckpoint(raw, origin, verifier)
}

func sourceTiles(ctx context.Context, src Source) *tileCache {
	return newTileCache(func(ts []tlog.Tile) ([][]byte, error) {
		data, err := src.ReadTiles(ctx, ts)
		if err != nil {
			return nil, &fetchError{err}
		}
		return data, nil
	})
}

// leafTile is the level-0 tile holding leaf index of a tree of size size,
// as wide as that tree makes it.
func leafTile(size, index int64) tlog.Tile {
	n := index >> TileHeight
	return tlog.Tile{H: TileHeight, L: 0, N: n, W: int(min(1<<TileHeight, size-n<<TileHeight))}
}

// entryPageSize is how many entries the verifier asks a source for at once.
const entryPageSize = maxEntriesPage

// streamEntries calls each with every entry of the tree of size size, in
// order, fetching the next page while the current one is processed. A gap
// is an *EntryError naming the first missing index, returned after each
// has seen every entry before it.
func streamEntries(ctx context.Context, src Source, size int64, progress func(done, total int64), each func(Entry) error) error {
	type page struct {
		start   int64
		n       int
		entries []Entry
	}
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan page, 2)
	g, gctx := errgroup.WithContext(inner)
	g.Go(func() error {
		defer close(pages)
		for start := int64(0); start < size; start += entryPageSize {
			n := int(min(entryPageSize, size-start))
			es, err := src.Entries(gctx, size, start, n)
			if err != nil {
				return fmt.Errorf("read entries from %d: %w", start, err)
			}
			select {
			case pages <- page{start, n, es}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	consume := func() error {
		next := int64(0)
		for p := range pages {
			for _, e := range p.entries {
				switch {
				case e.Index < p.start || e.Index >= p.start+int64(p.n) || e.Index < next:
					return fmt.Errorf("the source sent entry %d for the range [%d, %d), out of order", e.Index, p.start, p.start+int64(p.n))
				case e.Index > next:
					return &EntryError{Index: next, Reason: "is missing", Err: ErrEntryMissing}
				}
				if err := each(e); err != nil {
					return err
				}
				next++
			}
			if end := p.start + int64(p.n); next < end {
				return &EntryError{Index: next, Reason: "is missing", Err: ErrEntryMissing}
			}
			if progress != nil {
				progress(next, size)
			}
		}
		return nil
	}
	err := consume()
	cancel()
	gerr := g.Wait()
	if err != nil {
		return err
	}
	if gerr != nil && !errors.Is(gerr, context.Canceled) {
		return gerr
	}
	return ctx.Err()
}

// frontier is an in-memory tlog.HashReader that keeps only the stored
// hashes still needed to append further records or compute the tree hash:
// the roots of the complete subtrees of the tree so far, at most 2 log n.
type frontier struct {
	n      int64
	hashes map[int64]tlog.Hash
}

func newFrontier() *frontier { return &frontier{hashes: make(map[int64]tlog.Hash)} }

// ReadHashes implements tlog.HashReader.
func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := f.hashes[x]
		if !ok {
			return nil, fmt.Errorf("recompute tree: stored hash %d was not kept", x)
		}
		out[i] = h
	}
	return out, nil
}

// add appends a record and returns its leaf hash.
func (f *frontier) add(data []byte) (tlog.Hash, error) {
	hs, err := tlog.StoredHashes(f.n, data, f)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("recompute tree at entry %d: %w", f.n, err)
	}
	base := tlog.StoredHashIndex(0, f.n)
	for i, h := range hs {
		f.hashes[base+int64(i)] = h
	}
	// hs[l] is the node at level l completed by this record; its two
	// children are inside it now and no longer needed.
	for l := 1; l < len(hs); l++ {
		k := f.n >> uint(l)
		delete(f.hashes, tlog.StoredHashIndex(l-1, 2*k))
		delete(f.hashes, tlog.StoredHashIndex(l-1, 2*k+1))
	}
	f.n++
	return hs[0], nil
}

func (f *frontier) root() (tlog.Hash, error) { return treeHash(f.n, f) }

type payloadCheck struct {
	index int64
	ref   PayloadRef
}

// checkEntries recomputes the tree from the entries of ck's tree and
// compares it leaf by leaf and at the root with ck.
func checkEntries(ctx context.Context, src Source, tiles *tileCache, ck *Checkpoint, opts VerifyOptions) (int64, int, error) {
	size := ck.Size
	hr := tlog.TileHashReader(tlog.Tree{N: size, Hash: ck.Root}, tiles)
	tree := newFrontier()
	var (
		chunk      []tlog.Hash // leaf hashes of entries from chunkStart, within one tile
		chunkStart int64
		payloads   []payloadCheck // of the current chunk
		checked    int
		// When tiles fail to authenticate the verifier goes on recomputing
		// the root, and remembers what it can say about where.
		tileErr      error
		tileErrAt    int64 = -1
		firstSuspect int64 = -1
	)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		idx := make([]int64, len(chunk))
		for i := range chunk {
			idx[i] = tlog.StoredHashIndex(0, chunkStart+int64(i))
		}
		bad := int64(-1)
		var badErr error
		auth, err := hr.ReadHashes(idx)
		var fe *fetchError
		switch {
		case errors.As(err, &fe):
			return fmt.Errorf("read hash tiles for entries %d-%d: %w", chunkStart, chunkStart+int64(len(chunk))-1, fe.err)
		case err != nil:
			if tileErr == nil {
				tileErr, tileErrAt = err, chunkStart
			}
			if firstSuspect < 0 {
				firstSuspect = unauthenticatedDiff(tiles, size, chunkStart, chunk)
			}
		default:
			for i, h := range chunk {
				if auth[i] != h {
					bad = chunkStart + int64(i)
					badErr = &EntryError{Index: bad, Err: ErrRootMismatch,
						Reason: fmt.Sprintf("does not match the log: its leaf hash is %s, the signed tree has %s", h, auth[i])}
					break
				}
			}
		}
		for _, p := range payloads {
			if bad >= 0 && p.index >= bad {
				break
			}
			if err := checkPayload(ctx, src, p); err != nil {
				return err
			}
			checked++
		}
		if badErr != nil {
			return badErr
		}
		chunkStart += int64(len(chunk))
		chunk, payloads = chunk[:0], payloads[:0]
		return nil
	}
	err := streamEntries(ctx, src, size, opts.Progress, func(e Entry) error {
		leaf, err := tree.add(e.Data)
		if err != nil {
			return err
		}
		chunk = append(chunk, leaf)
		if opts.Payloads {
			if ref, ok := payloadRef(e.Data); ok {
				payloads = append(payloads, payloadCheck{e.Index, ref})
			}
		}
		if (e.Index+1)%(1<<TileHeight) == 0 || e.Index+1 == size {
			return flush()
		}
		return nil
	})
	if errors.Is(err, ErrEntryMissing) {
		// Bad entries before the gap come first.
		if ferr := flush(); ferr != nil {
			return 0, 0, ferr
		}
	}
	if err != nil {
		return 0, 0, err
	}
	root, err := tree.root()
	if err != nil {
		return 0, 0, err
	}
	switch {
	case tileErr == nil && root == ck.Root:
		return size, checked, nil
	case tileErr == nil:
		return 0, 0, fmt.Errorf("%w: recomputed %s, the checkpoint signs %s", ErrRootMismatch, root, ck.Root)
	case root == ck.Root:
		where := ""
		if firstSuspect >= 0 {
			where = fmt.Sprintf(" (first wrong leaf hash: entry %d)", firstSuspect)
		}
		return 0, 0, fmt.Errorf("%w: the entries hash to the signed root, but the tiles for entries from %d do not authenticate (%v): the log's hash storage is corrupt%s",
			ErrTilesInconsistent, tileErrAt, tileErr, where)
	case firstSuspect >= 0:
		return 0, 0, &EntryError{Index: firstSuspect, Err: ErrRootMismatch,
			Reason: fmt.Sprintf("does not match the log's hash tiles, which themselves do not match the signed checkpoint; "+
				"the entries hash to %s, the checkpoint signs %s", root, ck.Root)}
	default:
		return 0, 0, fmt.Errorf("%w: recomputed %s, the checkpoint signs %s; the log's hash tiles do not match the checkpoint either "+
			"(from entry %d: %v): entries and their hashes were rewritten together", ErrRootMismatch, root, ck.Root, tileErrAt, tileErr)
	}
}

// unauthenticatedDiff compares leaf hashes with the raw level-0 tile of
// the log, without authenticating it, and returns the first index that
// differs or -1.
func unauthenticatedDiff(tiles *tileCache, size, start int64, leaves []tlog.Hash) int64 {
	t := leafTile(size, start)
	data, err := tiles.ReadTiles([]tlog.Tile{t})
	if err != nil || len(data[0]) != t.W*tlog.HashSize {
		return -1
	}
	for i, h := range leaves {
		th, err := tlog.HashFromTile(t, data[0], tlog.StoredHashIndex(0, start+int64(i)))
		if err != nil {
			return -1
		}
		if th != h {
			return start + int64(i)
		}
	}
	return -1
}

var payloadRefKey = []byte(`"payload_ref"`)

// payloadRef returns the payload reference of an entry, if it has one.
func payloadRef(data []byte) (PayloadRef, bool) {
	if !bytes.Contains(data, payloadRefKey) {
		return PayloadRef{}, false
	}
	var e struct {
		PayloadRef *PayloadRef `json:"payload_ref"`
	}
	if err := json.Unmarshal(data, &e); err != nil || e.PayloadRef == nil {
		return PayloadRef{}, false
	}
	return *e.PayloadRef, true
}

func checkPayload(ctx context.Context, src Source, p payloadCheck) error {
	if !validSHA256Hex(p.ref.SHA256) {
		return &EntryError{Index: p.index, Reason: fmt.Sprintf("has a malformed payload_ref hash %q", printable(p.ref.SHA256, 80))}
	}
	data, err := src.Blob(ctx, p.ref.SHA256)
	if errors.Is(err, ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return &EntryError{Index: p.index, Reason: fmt.Sprintf("refers to payload %s, which is missing", p.ref.SHA256)}
	}
	if err != nil {
		return fmt.Errorf("entry %d: fetch payload %s: %w", p.index, p.ref.SHA256, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.ref.SHA256 {
		return &EntryError{Index: p.index, Reason: fmt.Sprintf("refers to payload %s, but the stored payload has SHA-256 %x", p.ref.SHA256, sum)}
	}
	if len(data) != p.ref.Size {
		return &EntryError{Index: p.index, Reason: fmt.Sprintf("refers to a payload of %d bytes, the stored one has %d", p.ref.Size, len(data))}
	}
	return nil
}

// State is the witness state a verifier keeps between runs: the last
// checkpoint it verified and the key it pinned.
type State struct {
	Origin      string `json:"origin"`
	VerifierKey string `json:"verifier_key"`
	// Checkpoint is the signed note, verbatim; Size and Root repeat it for
	// people reading the file and are not trusted.
	Checkpoint string    `json:"checkpoint"`
	Size       int64     `json:"size"`
	Root       string    `json:"root"`
	VerifiedAt time.Time `json:"verified_at"`
}

const maxStateBytes = 1 << 20

// LoadState reads a state file; a file that does not exist is no state
// (nil, nil).
func LoadState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("state file %s is larger than %d bytes", path, maxStateBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &st, nil
}

func saveState(path, origin, vkey string, ck *Checkpoint, now time.Time) error {
	// Never move the state backwards: another run may have verified a
	// larger tree meanwhile.
	if cur, err := LoadState(path); err == nil && cur != nil && cur.VerifierKey == vkey && cur.Size > ck.Size {
		return nil
	}
	st := State{Origin: origin, VerifierKey: vkey, Checkpoint: string(ck.Note), Size: ck.Size,
		Root: base64.StdEncoding.EncodeToString(ck.Root[:]), VerifiedAt: now.UTC()}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := devinfo.WriteFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// DefaultStatePath is where the CLI keeps the state of the log with this
// origin: <user config dir>/bulwark/audit-state/<origin>.json, the origin
// reduced to characters safe in a file name.
func DefaultStatePath(origin string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("state file: %w", err)
	}
	return filepath.Join(dir, "bulwark", "audit-state", sanitizeFileName(origin)+".json"), nil
}

func sanitizeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	out := string(b)
	if len(out) > 128 {
		out = out[:128]
	}
	if out == "" || out[0] == '.' {
		out = "_" + out
	}
	return out
}

// httpSource reads a log over its HTTP API.
type httpSource struct{ c *Client }

// HTTPSource is the Source of a log served by c.
func HTTPSource(c *Client) Source { return httpSource{c} }

var (
	_ KeySource         = httpSource{}
	_ ConsistencyProver = httpSource{}
)

func (s httpSource) Checkpoint(ctx context.Context) ([]byte, error) { return s.c.Checkpoint(ctx) }
func (s httpSource) Key(ctx context.Context) (string, error)        { return s.c.Key(ctx) }

func (s httpSource) Entries(ctx context.Context, treeSize, start int64, limit int) ([]Entry, error) {
	limit = int(min(int64(limit), int64(maxEntriesPage), treeSize-start))
	if limit < 1 {
		return nil, nil
	}
	resp, err := s.c.Entries(ctx, start, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(resp.Entries))
	for i, e := range resp.Entries {
		out[i] = Entry{Index: e.Index, Data: e.Data}
	}
	return out, nil
}

func (s httpSource) ReadTiles(ctx context.Context, tiles []tlog.Tile) ([][]byte, error) {
	for _, t := range tiles {
		if t.L < 0 {
			return nil, fmt.Errorf("read tiles: %s is not a hash tile", TilePath(t))
		}
	}
	return fetchTiles(ctx, tiles, s.c.Tile)
}

func (s httpSource) Blob(ctx context.Context, sha256Hex string) ([]byte, error) {
	if !validSHA256Hex(sha256Hex) {
		return nil, fmt.Errorf("payload hash %q: want 64 lowercase hex digits", sha256Hex)
	}
	return s.c.do(ctx, http.MethodGet, "/v1/audit/blobs/"+sha256Hex, nil, nil, maxBlobBytes)
}

func (s httpSource) ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	resp, err := s.c.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, err
	}
	if resp.From != from || resp.To != to {
		return nil, fmt.Errorf("asked for a proof from %d to %d, got one from %d to %d", from, to, resp.From, resp.To)
	}
	return resp.TreeProof()
}
