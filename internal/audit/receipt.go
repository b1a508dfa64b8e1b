package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A receipt is a C2SP tlog-proof (https://c2sp.org/tlog-proof): the proof,
// offline-verifiable, that an entry is in the log.
//
//	c2sp.org/tlog-proof@v1
//	[extra <base64>]
//	index <N>
//	<base64 hash>          one per line, from the leaf's sibling up
//	                       (an empty line)
//	<signed checkpoint, verbatim>
const receiptHeader = "c2sp.org/tlog-proof@v1"

// Bounds of a receipt ParseReceipt accepts.
const (
	maxReceiptExtraBytes = 4 << 10
	maxReceiptBytes      = 8<<10 + maxCheckpointBytes
)

// ReceiptExt is the file extension C2SP recommends for receipts.
const ReceiptExt = ".tlog-proof"

// Receipt is a parsed C2SP tlog-proof.
type Receipt struct {
	Index int64
	// Extra is opaque, unauthenticated application data; nil if absent.
	Extra      []byte
	Proof      tlog.RecordProof
	Checkpoint []byte // the signed checkpoint note, verbatim
}

// FormatReceipt returns the C2SP tlog-proof that the entry at index is in
// the tree signed by checkpointNote, with inclusion proof proof.
func FormatReceipt(index int64, proof tlog.RecordProof, checkpointNote []byte) []byte {
	return (&Receipt{Index: index, Proof: proof, Checkpoint: checkpointNote}).Marshal()
}

// Marshal returns r in the C2SP tlog-proof format.
func (r *Receipt) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(receiptHeader + "\n")
	if len(r.Extra) > 0 {
		b.WriteString("extra " + base64.StdEncoding.EncodeToString(r.Extra) + "\n")
	}
	b.WriteString("index " + strconv.FormatInt(r.Index, 10) + "\n")
	for _, h := range r.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(r.Checkpoint)
	return b.Bytes()
}

// ParseReceipt parses a C2SP tlog-proof strictly: exactly the layout of
// the spec, canonical base64 and decimal, at most 64 proof hashes, a
// bounded size. It does not verify anything; see VerifyReceipt.
func ParseReceipt(data []byte) (*Receipt, error) {
	if len(data) > maxReceiptBytes {
		return nil, fmt.Errorf("receipt is %d bytes, more than %d", len(data), maxReceiptBytes)
	}
	rest := data
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		line := string(rest[:i])
		rest = rest[i+1:]
		return line, true
	}
	line, ok := next()
	if !ok || line != receiptHeader {
		return nil, fmt.Errorf("receipt: the first line must be %q", receiptHeader)
	}
	var r Receipt
	if line, ok = next(); !ok {
		return nil, errors.New("receipt: truncated after the header")
	}
	if v, found := strings.CutPrefix(line, "extra "); found {
		extra, err := canonicalBase64(v)
		if err != nil || len(extra) == 0 || len(extra) > maxReceiptExtraBytes {
			return nil, fmt.Errorf("receipt: extra data must be 1 to %d bytes of canonical base64", maxReceiptExtraBytes)
		}
		r.Extra = extra
		if line, ok = next(); !ok {
			return nil, errors.New("receipt: truncated after the extra line")
		}
	}
	v, found := strings.CutPrefix(line, "index ")
	if !found {
		return nil, errors.New(`receipt: expected "index <N>"`)
	}
	index, err := parseDecimal(v)
	if err != nil {
		return nil, fmt.Errorf("receipt: index: %w", err)
	}
	r.Index = index
	for {
		line, ok = next()
		if !ok {
			return nil, errors.New("receipt: no empty line before the checkpoint")
		}
		if line == "" {
			break
		}
		if len(r.Proof) == maxProofHashes {
			return nil, fmt.Errorf("receipt: more than %d proof hashes", maxProofHashes)
		}
		b, err := canonicalBase64(line)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("receipt: proof line %d is not a base64 SHA-256 hash", len(r.Proof)+1)
		}
		r.Proof = append(r.Proof, tlog.Hash(b))
	}
	if len(rest) == 0 {
		return nil, errors.New("receipt: no checkpoint")
	}
	if len(rest) > maxCheckpointBytes {
		return nil, fmt.Errorf("receipt: checkpoint is more than %d bytes", maxCheckpointBytes)
	}
	if rest[len(rest)-1] != '\n' {
		return nil, errors.New("receipt: the checkpoint does not end with a newline")
	}
	r.Checkpoint = bytes.Clone(rest)
	return &r, nil
}

// canonicalBase64 decodes standard padded base64 and refuses any other
// spelling of the same bytes (the decoder alone skips CR and LF).
func canonicalBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, errors.New("non-canonical base64")
	}
	return b, nil
}

// parseDecimal parses a non-negative ASCII decimal with no sign and no
// leading zeros.
func parseDecimal(s string) (int64, error) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal", printable(s, 32))
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a canonical decimal", printable(s, 32))
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n, nil
}

// VerifyReceipt checks that entry (its exact bytes) is the entry the
// receipt names, in a tree whose checkpoint is signed by verifier for
// origin.
func VerifyReceipt(r *Receipt, entry []byte, origin string, verifier note.Verifier) error {
	_, err := verifyReceipt(r, entry, origin, verifier)
	return err
}

func verifyReceipt(r *Receipt, entry []byte, origin string, verifier note.Verifier) (*Checkpoint, error) {
	if r == nil {
		return nil, errors.New("verify receipt: no receipt")
	}
	ck, err := ParseCheckpoint(r.Checkpoint, origin, verifier)
	if err != nil {
		return nil, fmt.Errorf("verify receipt: %w", err)
	}
	if r.Index < 0 || r.Index >= ck.Size {
		return nil, fmt.Errorf("verify receipt: entry %d is not in the signed tree of size %d", r.Index, ck.Size)
	}
	if err := tlog.CheckRecord(r.Proof, ck.Size, ck.Root, r.Index, tlog.RecordHash(entry)); err != nil {
		return nil, fmt.Errorf("verify receipt: the proof does not lead from entry %d to the signed root: %w", r.Index, err)
	}
	return ck, nil
}

// Prove returns a receipt for entry index against the log's latest
// checkpoint, and the entry, after verifying both: the checkpoint's
// signature and the inclusion proof served by the log.
func Prove(ctx context.Context, c *Client, index int64, origin string, verifier note.Verifier) (*Receipt, []byte, error) {
	if index < 0 {
		return nil, nil, fmt.Errorf("prove: index %d is negative", index)
	}
	raw, err := c.Checkpoint(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch checkpoint: %w", err)
	}
	ck, err := ParseCheckpoint(raw, origin, verifier)
	if err != nil {
		return nil, nil, err
	}
	if index >= ck.Size {
		return nil, nil, fmt.Errorf("prove: entry %d is not in the latest checkpoint (size %d); wait for the next one", index, ck.Size)
	}
	ip, err := c.InclusionProof(ctx, index, ck.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch inclusion proof: %w", err)
	}
	if ip.Index != index || ip.TreeSize != ck.Size {
		return nil, nil, fmt.Errorf("prove: asked for entry %d in size %d, got entry %d in size %d", index, ck.Size, ip.Index, ip.TreeSize)
	}
	proof, err := ip.RecordProof()
	if err != nil {
		return nil, nil, err
	}
	page, err := c.Entries(ctx, index, 1)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch entry %d: %w", index, err)
	}
	if len(page.Entries) != 1 || page.Entries[0].Index != index {
		return nil, nil, &EntryError{Index: index, Reason: "is missing", Err: ErrEntryMissing}
	}
	entry := page.Entries[0].Data
	r := &Receipt{Index: index, Proof: proof, Checkpoint: ck.Note}
	if err := VerifyReceipt(r, entry, origin, verifier); err != nil {
		return nil, nil, &EntryError{Index: index, Err: ErrRootMismatch,
			Reason: "does not match the log: its inclusion proof fails against the signed checkpoint: " + err.Error()}
	}
	return r, entry, nil
}
