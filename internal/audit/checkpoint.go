package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	tlogfmt "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/store"
)

// GenerateSigningKey returns a new Ed25519 signed-note key pair named for
// origin, as note.NewSigner and note.NewVerifier expect them.
func GenerateSigningKey(origin string) (signerKey, verifierKey string, err error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generate checkpoint key for %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// loadKeyPair parses a signed-note key pair and checks that the two halves
// belong together.
func loadKeyPair(signerKey, verifierKey string) (note.Signer, note.Verifier, error) {
	signer, err := note.NewSigner(signerKey)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint signer key: %w", err)
	}
	verifier, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	probe, err := note.Sign(&note.Note{Text: "bulwark key pair check\n"}, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint signer key: %w", err)
	}
	if _, err := note.Open(probe, note.VerifierList(verifier)); err != nil {
		return nil, nil, errors.New("checkpoint signer and verifier keys do not belong together")
	}
	return signer, verifier, nil
}

// Verifier returns the note verifier for the log's checkpoints.
func (l *Log) Verifier() note.Verifier { return l.verifier }

// VerifierKey returns the published verifier key of the log (the signed-note
// "vkey" form: name+hash+base64 key).
func (l *Log) VerifierKey() string { return l.verifierKey }

// IssueCheckpoint signs a checkpoint for the current tree size, unless one
// exists for that size already, in which case that one is returned. The
// store allows one checkpoint per size, so two replicas racing here agree.
func (l *Log) IssueCheckpoint(ctx context.Context) (*Checkpoint, error) {
	l.ckptMu.Lock()
	defer l.ckptMu.Unlock()
	latest, err := l.LatestCheckpoint(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	size, err := l.Size(ctx)
	if err != nil {
		return nil, err
	}
	if latest != nil && latest.Size == size {
		return latest, nil
	}
	if latest != nil && latest.Size > size {
		return nil, fmt.Errorf("%w: latest checkpoint has %d entries but the tree has %d", ErrCorrupt, latest.Size, size)
	}
	root, err := l.TreeHash(ctx, size)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	body := tlogfmt.Checkpoint{Origin: l.cfg.Origin, Size: uint64(size), Hash: root[:]}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body)}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	ck := &Checkpoint{Size: size, Root: root, Note: signed}
	err = l.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
			size, root[:], signed, l.now().Unix())
		return err
	})
	if store.IsUniqueViolation(err) {
		// Another replica signed this size first; it must have the same root.
		other, err := l.checkpointAt(ctx, size)
		if err != nil {
			return nil, err
		}
		if other.Root != root {
			return nil, fmt.Errorf("%w: size %d has root %x in the store, computed %x", ErrFork, size, other.Root, root)
		}
		return other, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store checkpoint: %w", err)
	}
	l.metrics.checkpointed(size)
	l.log.Info("audit checkpoint issued", "size", size)
	return ck, nil
}

// LatestCheckpoint returns the checkpoint of the largest tree signed so far.
func (l *Log) LatestCheckpoint(ctx context.Context) (*Checkpoint, error) {
	return l.scanCheckpoint(l.db.QueryRowContext(ctx,
		"SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"))
}

func (l *Log) checkpointAt(ctx context.Context, size int64) (*Checkpoint, error) {
	return l.scanCheckpoint(l.db.QueryRowContext(ctx,
		"SELECT size, root, note FROM audit_checkpoints WHERE size = ?", size))
}

func (l *Log) scanCheckpoint(row *sql.Row) (*Checkpoint, error) {
	var (
		ck   Checkpoint
		root []byte
	)
	err := row.Scan(&ck.Size, &root, &ck.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("checkpoint: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if len(root) != tlog.HashSize {
		return nil, fmt.Errorf("%w: checkpoint %d has a %d-byte root", ErrCorrupt, ck.Size, len(root))
	}
	copy(ck.Root[:], root)
	return &ck, nil
}

func (l *Log) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(l.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := l.IssueCheckpoint(ctx); err != nil && ctx.Err() == nil {
				l.log.Error("audit checkpoint failed", "error", err)
			}
		}
	}
}

// ParseCheckpoint verifies a signed checkpoint note against the log's
// verifier key and origin and returns its size and root.
func ParseCheckpoint(signed []byte, origin string, verifier note.Verifier) (*Checkpoint, error) {
	if len(signed) > maxCheckpointBytes {
		return nil, fmt.Errorf("checkpoint is %d bytes, more than %d", len(signed), maxCheckpointBytes)
	}
	cp, _, _, err := tlogfmt.ParseCheckpoint(signed, origin, verifier)
	if err != nil {
		return nil, fmt.Errorf("verify checkpoint: %w", err)
	}
	if len(cp.Hash) != tlog.HashSize {
		return nil, fmt.Errorf("checkpoint root is %d bytes, want %d", len(cp.Hash), tlog.HashSize)
	}
	if cp.Size > 1<<62 {
		return nil, fmt.Errorf("checkpoint size %d is out of range", cp.Size)
	}
	ck := &Checkpoint{Size: int64(cp.Size), Note: bytes.Clone(signed)}
	copy(ck.Root[:], cp.Hash)
	return ck, nil
}

// maxCheckpointBytes bounds a checkpoint note a client will parse.
const maxCheckpointBytes = 64 << 10
