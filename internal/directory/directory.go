package directory

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Service is one entry of the directory.
type Service struct {
	// ID is the service's SPIFFE ID, in the control plane's trust domain.
	ID string `json:"id"`
	// Name is a unique DNS label ("payments").
	Name string `json:"name"`
	// Endpoints are host:port addresses of the service's agent.
	Endpoints []string `json:"endpoints"`
	// Owner is the team or person responsible for the service.
	Owner string `json:"owner"`
	// DataClasses are the classes of data the service holds ("restricted").
	DataClasses []string `json:"data_classes"`
	// Region is where the service runs ("eu"); it may be empty.
	Region string `json:"region,omitempty"`
	// CreatedAt and UpdatedAt are set by the directory; values sent by a
	// client are ignored.
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// MaxServiceBytes bounds the JSON of one service.
const MaxServiceBytes = 64 << 10

// DecodeService strictly decodes the JSON of one service: one object, no
// unknown fields, nothing after it, at most MaxServiceBytes. It does not
// validate the values (see Service.Validate). Errors wrap ErrInvalid.
func DecodeService(data []byte) (Service, error) {
	var s Service
	if len(data) > MaxServiceBytes {
		return s, fmt.Errorf("%w: JSON is %d bytes; the limit is %d", ErrInvalid, len(data), MaxServiceBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Service{}, fmt.Errorf("%w: decode JSON: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Service{}, fmt.Errorf("%w: unexpected data after the JSON object", ErrInvalid)
	}
	return s, nil
}

// Config configures a Directory.
type Config struct {
	// TrustDomain is the only trust domain whose SPIFFE IDs are accepted
	// ("bulwark.local").
	TrustDomain string
}

// Auditor receives the directory's audit events; *audit.Log is one.
type Auditor interface {
	Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error)
}

// Deps are the Directory's dependencies. DB and Audit are required;
// Logger defaults to discarding and Now to time.Now.
type Deps struct {
	DB     *store.DB
	Audit  Auditor
	Logger *slog.Logger
	Now    func() time.Time
}

// Directory is the service directory over the store.
type Directory struct {
	td    string
	db    *store.DB
	audit Auditor
	log   *slog.Logger
	now   func() time.Time
}

// New returns a Directory after validating cfg and deps.
func New(cfg Config, deps Deps) (*Directory, error) {
	if err := validateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("directory: config: %w", err)
	}
	switch {
	case deps.DB == nil:
		return nil, errors.New("directory: no store")
	case deps.Audit == nil:
		return nil, errors.New("directory: no audit log")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Directory{td: cfg.TrustDomain, db: deps.DB, audit: deps.Audit, log: deps.Logger, now: deps.Now}, nil
}

// TrustDomain returns the trust domain the directory accepts.
func (d *Directory) TrustDomain() string { return d.td }

const serviceColumns = "id, name, endpoints, owner, data_classes, region, created_at, updated_at"

type scanner interface{ Scan(dest ...any) error }

func scanService(row scanner) (Service, error) {
	var (
		s                Service
		eps, dcs         string
		created, updated int64
	)
	if err := row.Scan(&s.ID, &s.Name, &eps, &s.Owner, &dcs, &s.Region, &created, &updated); err != nil {
		return Service{}, err
	}
	if err := json.Unmarshal([]byte(eps), &s.Endpoints); err != nil {
		return Service{}, fmt.Errorf("service %q: stored endpoints: %w", s.ID, err)
	}
	if err := json.Unmarshal([]byte(dcs), &s.DataClasses); err != nil {
		return Service{}, fmt.Errorf("service %q: stored data classes: %w", s.ID, err)
	}
	s.CreatedAt, s.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return s, nil
}

// Put creates the service s, or replaces the one with its ID, and returns
// it as stored. actor names who made the change when the context carries
// no admin credential. A refusal of bad input wraps ErrInvalid or
// ErrConflict (a *FieldError) and is not audited.
func (d *Directory) Put(ctx context.Context, s Service, actor string) (Service, error) {
	out, _, err := d.put(ctx, s, actor)
	return out, err
}

// put is Put, also reporting whether the service was created.
func (d *Directory) put(ctx context.Context, s Service, actor string) (Service, bool, error) {
	if err := s.Validate(d.td); err != nil {
		return Service{}, false, err
	}
	if s.DataClasses == nil {
		s.DataClasses = []string{}
	}
	eps, err := json.Marshal(s.Endpoints)
	if err != nil {
		return Service{}, false, fmt.Errorf("directory: encode endpoints: %w", err)
	}
	dcs, err := json.Marshal(s.DataClasses)
	if err != nil {
		return Service{}, false, fmt.Errorf("directory: encode data classes: %w", err)
	}
	now := d.now().UTC().Truncate(time.Millisecond)
	var (
		created bool
		prev    Service
	)
	err = d.db.InTx(ctx, func(tx *store.Tx) error {
		created, prev = false, Service{}
		var other string
		err := tx.QueryRowContext(ctx, "SELECT id FROM directory_services WHERE name = ? AND id <> ?", s.Name, s.ID).Scan(&other)
		switch {
		case err == nil:
			return &FieldError{Field: "name", Reason: fmt.Sprintf("%q is already the name of %s", s.Name, other), Kind: ErrConflict}
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("check name: %w", err)
		}
		prev, err = scanService(tx.QueryRowContext(ctx, "SELECT "+serviceColumns+" FROM directory_services WHERE id = ?", s.ID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			s.CreatedAt, s.UpdatedAt = now, now
			_, err = tx.ExecContext(ctx, "INSERT INTO directory_services ("+serviceColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
				s.ID, s.Name, string(eps), s.Owner, string(dcs), s.Region, now.UnixMilli(), now.UnixMilli())
		case err != nil:
			return fmt.Errorf("read service: %w", err)
		default:
			s.CreatedAt, s.UpdatedAt = prev.CreatedAt, now
			_, err = tx.ExecContext(ctx, "UPDATE directory_services SET name = ?, endpoints = ?, owner = ?, data_classes = ?, region = ?, updated_at = ? WHERE id = ?",
				s.Name, string(eps), s.Owner, string(dcs), s.Region, now.UnixMilli(), s.ID)
		}
		if store.IsUniqueViolation(err) {
			return &FieldError{Field: "name", Reason: fmt.Sprintf("%q is already the name of another service", s.Name), Kind: ErrConflict}
		}
		if err != nil {
			return fmt.Errorf("write service: %w", err)
		}
		return nil
	})
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return Service{}, false, fe
		}
		return Service{}, false, fmt.Errorf("directory: put %s: %w", s.ID, err)
	}
	ev := putEvent(ctx, actor, created, prev, s)
	if err := d.emit(ctx, ev); err != nil {
		return Service{}, false, fmt.Errorf("directory: put %s: committed but %w", s.ID, err)
	}
	return s, created, nil
}

// Get returns the service with the SPIFFE ID id, or ErrNotFound.
func (d *Directory) Get(ctx context.Context, id string) (Service, error) {
	if len(id) > MaxIDLen {
		return Service{}, fmt.Errorf("directory: get: %w", ErrNotFound)
	}
	s, err := scanService(d.db.QueryRowContext(ctx, "SELECT "+serviceColumns+" FROM directory_services WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Service{}, fmt.Errorf("directory: get %q: %w", clip(id, 256), ErrNotFound)
	}
	if err != nil {
		return Service{}, fmt.Errorf("directory: get: %w", err)
	}
	return s, nil
}

// ByName returns the service named name, or ErrNotFound.
func (d *Directory) ByName(ctx context.Context, name string) (Service, error) {
	if len(name) > MaxNameLen {
		return Service{}, fmt.Errorf("directory: by name: %w", ErrNotFound)
	}
	s, err := scanService(d.db.QueryRowContext(ctx, "SELECT "+serviceColumns+" FROM directory_services WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return Service{}, fmt.Errorf("directory: by name %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Service{}, fmt.Errorf("directory: by name: %w", err)
	}
	return s, nil
}

// List returns every service, ordered by name.
func (d *Directory) List(ctx context.Context) ([]Service, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+serviceColumns+" FROM directory_services ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("directory: list: %w", err)
	}
	defer rows.Close()
	out := []Service{}
	for rows.Next() {
		s, err := scanService(rows)
		if err != nil {
			return nil, fmt.Errorf("directory: list: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("directory: list: %w", err)
	}
	return out, nil
}

// Delete removes the service with the SPIFFE ID id, or returns
// ErrNotFound.
func (d *Directory) Delete(ctx context.Context, id, actor string) error {
	var prev Service
	err := d.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		prev, err = scanService(tx.QueryRowContext(ctx, "SELECT "+serviceColumns+" FROM directory_services WHERE id = ?", id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read service: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM directory_services WHERE id = ?", id); err != nil {
			return fmt.Errorf("delete service: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory: delete %q: %w", clip(id, 256), err)
	}
	if err := d.emit(ctx, deleteEvent(ctx, actor, prev)); err != nil {
		return fmt.Errorf("directory: delete %s: committed but %w", id, err)
	}
	return nil
}

// auditActor is the OCSF actor of a change: the admin credential of the
// request, else the given actor, else the directory itself.
func auditActor(ctx context.Context, actor string) *audit.Actor {
	if id := adminauth.CredentialID(ctx); id != "" {
		return &audit.Actor{User: &audit.User{UID: id, Type: "admin"}}
	}
	if actor != "" {
		return &audit.Actor{User: &audit.User{UID: clip(actor, 256)}}
	}
	return &audit.Actor{AppName: eventProduct}
}
