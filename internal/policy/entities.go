package policy

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/bulwarksec/bulwark/internal/store"
)

// Limits of the entity store.
const (
	// MaxEntities is the largest number of entities one PutEntities takes.
	MaxEntities = 100_000
	// MaxEntityIDLen bounds an entity ID, in bytes.
	MaxEntityIDLen = 1024
	// maxReportedProblems bounds the problems an EntitiesError lists.
	maxReportedProblems = 20
)

// EntitiesError lists why entities given to PutEntities were refused;
// nothing was stored.
type EntitiesError struct {
	Problems []string
}

func (e *EntitiesError) Error() string {
	return fmt.Sprintf("%d entity problem(s): %s", len(e.Problems), strings.Join(e.Problems, "; "))
}

// PutEntities stores a Cedar JSON entity array after validating every
// entity against the schema: all of them or none. With replace the
// entities replace the whole store; otherwise each one is inserted or
// replaces the entity of the same UID. A bundle carrying the new entities
// is signed before it returns. It returns the new entities version; a
// refusal is an *EntitiesError.
func (r *Repository) PutEntities(ctx context.Context, entitiesJSON []byte, replace bool, actor Actor) (v int64, err error) {
	defer func() { r.metrics.count("entities", err) }()
	ents, err := r.decodeEntities(entitiesJSON)
	if err != nil {
		r.emitRefusal(ctx, entitiesRefusedEvent(actor, replace, err))
		return 0, err
	}
	now := r.now().UnixMilli()
	var version int64
	_, err = r.commit(ctx, func(tx *store.Tx, h *repoHead) error {
		if replace {
			if _, err := tx.ExecContext(ctx, "DELETE FROM policy_entities"); err != nil {
				return fmt.Errorf("clear entities: %w", err)
			}
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO policy_entities (type, id, data, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (type, id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`)
		if err != nil {
			return fmt.Errorf("store entities: %w", err)
		}
		defer stmt.Close()
		for _, e := range ents {
			if _, err := stmt.ExecContext(ctx, string(e.uid.Type), string(e.uid.ID), string(e.data), now); err != nil {
				return fmt.Errorf("store entity %s: %w", e.uid, err)
			}
		}
		h.entities++
		version = h.entities
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("put entities: %w", err)
	}
	uids := make([]string, len(ents))
	for i, e := range ents {
		uids[i] = e.uid.String()
	}
	if err := r.emit(ctx, entitiesEvent(actor, replace, version, uids)); err != nil {
		return version, fmt.Errorf("put entities: %w", err)
	}
	return version, nil
}

// DeleteEntity removes one entity (ErrNotFound if there is none) and signs
// a bundle without it. It returns the new entities version.
func (r *Repository) DeleteEntity(ctx context.Context, uid cedar.EntityUID, actor Actor) (v int64, err error) {
	defer func() { r.metrics.count("entities", err) }()
	var version int64
	_, err = r.commit(ctx, func(tx *store.Tx, h *repoHead) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM policy_entities WHERE type = ? AND id = ?", string(uid.Type), string(uid.ID))
		if err != nil {
			return fmt.Errorf("delete entity: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("delete entity: %w", err)
		} else if n == 0 {
			return fmt.Errorf("entity %s: %w", uid, ErrNotFound)
		}
		h.entities++
		version = h.entities
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete entity: %w", err)
	}
	if err := r.emit(ctx, entityDeletedEvent(actor, version, uid.String())); err != nil {
		return version, fmt.Errorf("delete entity: %w", err)
	}
	return version, nil
}

// Entities returns the stored entities as a Cedar JSON entity array,
// ordered by type and ID; typeFilter, if not empty, keeps one entity type
// ("User" or "Bulwark::User").
func (r *Repository) Entities(ctx context.Context, typeFilter string) (json.RawMessage, error) {
	return readEntityArray(ctx, r.db, qualifyType(typeFilter))
}

// Entity returns one stored entity as Cedar JSON; ErrNotFound if there is
// none.
func (r *Repository) Entity(ctx context.Context, uid cedar.EntityUID) (json.RawMessage, error) {
	var data string
	err := r.db.QueryRowContext(ctx, "SELECT data FROM policy_entities WHERE type = ? AND id = ?", string(uid.Type), string(uid.ID)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("entity %s: %w", uid, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read entity %s: %w", uid, err)
	}
	return json.RawMessage(data), nil
}

type repoQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readEntityArray returns the stored entities (of one type, if typ is not
// empty) as a compact JSON array.
func readEntityArray(ctx context.Context, q repoQuerier, typ string) (json.RawMessage, error) {
	query, args := "SELECT data FROM policy_entities ORDER BY type, id", []any(nil)
	if typ != "" {
		query, args = "SELECT data FROM policy_entities WHERE type = ? ORDER BY id", []any{typ}
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read entities: %w", err)
	}
	defer rows.Close()
	var buf bytes.Buffer
	buf.WriteByte('[')
	first := true
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("read entities: %w", err)
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		buf.WriteString(data)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entities: %w", err)
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// storedEntity is a validated entity and its canonical JSON.
type storedEntity struct {
	uid  cedar.EntityUID
	data []byte
}

// decodeEntities decodes and validates a Cedar JSON entity array. Every
// problem is reported (up to maxReportedProblems) as an *EntitiesError.
func (r *Repository) decodeEntities(raw []byte) ([]storedEntity, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var items []json.RawMessage
	if err := dec.Decode(&items); err != nil {
		return nil, &EntitiesError{Problems: []string{"the body must be a JSON array of Cedar entities: " + clipRepo(err.Error(), 200)}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &EntitiesError{Problems: []string{"unexpected data after the entity array"}}
	}
	if items == nil {
		return nil, &EntitiesError{Problems: []string{"the body must be a JSON array of Cedar entities, not null"}}
	}
	if len(items) > MaxEntities {
		return nil, &EntitiesError{Problems: []string{fmt.Sprintf("%d entities, more than the limit of %d", len(items), MaxEntities)}}
	}
	v := validate.New(r.schema.resolved, validate.WithStrict())
	var problems []string
	seen := make(map[cedar.EntityUID]int, len(items))
	out := make([]storedEntity, 0, len(items))
	for i, item := range items {
		if len(problems) >= maxReportedProblems {
			problems = append(problems, "(further entities not checked)")
			break
		}
		var e cedar.Entity
		if err := json.Unmarshal(item, &e); err != nil {
			problems = append(problems, fmt.Sprintf("entity %d: %s", i, clipRepo(err.Error(), 200)))
			continue
		}
		name := fmt.Sprintf("entity %d (%s)", i, clipRepo(e.UID.String(), 200))
		switch {
		case len(e.UID.ID) > MaxEntityIDLen:
			problems = append(problems, fmt.Sprintf("%s: ID longer than %d bytes", name, MaxEntityIDLen))
			continue
		case e.UID.Type == "" || strings.HasSuffix(string(e.UID.Type), "::Action") || e.UID.Type == "Action":
			problems = append(problems, name+": action entities come from the schema and cannot be stored")
			continue
		}
		if prev, dup := seen[e.UID]; dup {
			problems = append(problems, fmt.Sprintf("%s: same UID as entity %d", name, prev))
			continue
		}
		seen[e.UID] = i
		if err := v.Entity(e); err != nil {
			problems = append(problems, fmt.Sprintf("%s: does not match the schema: %s", name, clipRepo(err.Error(), 300)))
			continue
		}
		data, err := json.Marshal(e)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", name, clipRepo(err.Error(), 200)))
			continue
		}
		out = append(out, storedEntity{uid: e.UID, data: data})
	}
	if len(problems) > 0 {
		return nil, &EntitiesError{Problems: problems}
	}
	return out, nil
}
