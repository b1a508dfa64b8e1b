package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Stable error codes of the client admin API, beside httpapi's.
const (
	// CodeInvalidClientMetadata: the registration does not pass
	// validation; the message names the field (RFC 7591 §3.2.2).
	CodeInvalidClientMetadata = "invalid_client_metadata"
	// CodeClientExists: a client with that ID is registered already.
	CodeClientExists = "client_exists"
)

// ErrInvalidRegistration wraps every validation error of a client
// registration; the wrapped message names the field.
var ErrInvalidRegistration = errors.New("invalid client registration")

// registrationError is a validation error: it is ErrInvalidRegistration
// and carries the message that names the field.
type registrationError struct{ err error }

func (e *registrationError) Error() string {
	return ErrInvalidRegistration.Error() + ": " + e.err.Error()
}
func (e *registrationError) Unwrap() []error { return []error{ErrInvalidRegistration, e.err} }

func invalidRegistration(err error) error { return &registrationError{err: err} }

// maxClientBody bounds the JSON body of a client registration.
const maxClientBody = 256 << 10

// clientBody is a registration as the admin API receives it. The fields
// the server owns are decoded so that a GET answer can be sent back as a
// PUT, but they cannot change anything: timestamps are ignored and
// "disabled" must match the client's state (POST .../disable and
// .../enable change it).
type clientBody struct {
	Client
	Disabled  *bool      `json:"disabled,omitempty"`
	CreatedAt *time.Time `json:"created_at,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// ClientList is the answer of GET /v1/identity/clients.
type ClientList struct {
	Clients []*Client `json:"clients"`
}

func (s *Server) registerClientAdmin(mux *http.ServeMux, admin func(http.Handler) http.Handler) {
	handle := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, admin(h)) }
	item := PathAdminClients + "/{id}"
	handle("POST "+PathAdminClients, s.adminCreateClient)
	handle("GET "+PathAdminClients, s.adminListClients)
	handle("GET "+item, s.adminGetClient)
	handle("PUT "+item, s.adminUpdateClient)
	handle("DELETE "+item, s.adminDeleteClient)
	handle("POST "+item+"/disable", func(w http.ResponseWriter, r *http.Request) { s.adminSetDisabled(w, r, true) })
	handle("POST "+item+"/enable", func(w http.ResponseWriter, r *http.Request) { s.adminSetDisabled(w, r, false) })
}

func (s *Server) adminCreateClient(w http.ResponseWriter, r *http.Request) {
	var body clientBody
	if err := httpapi.DecodeJSON(w, r, maxClientBody, &body); err != nil {
		s.adminError(w, r, err)
		return
	}
	if body.Disabled != nil && *body.Disabled {
		s.adminError(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidClientMetadata,
			"disabled: a client is registered enabled; disable it with POST %s/{id}/disable", PathAdminClients))
		return
	}
	c := body.Client
	if err := s.createClient(r.Context(), r, &c); err != nil {
		s.adminError(w, r, err)
		return
	}
	w.Header().Set("Location", PathAdminClients+"/"+c.ID)
	httpapi.WriteJSON(w, http.StatusCreated, &c)
}

func (s *Server) adminListClients(w http.ResponseWriter, r *http.Request) {
	list, err := s.listClients(r.Context(), r)
	if err != nil {
		s.adminError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ClientList{Clients: list})
}

func (s *Server) adminGetClient(w http.ResponseWriter, r *http.Request) {
	c, err := s.getClient(r.Context(), r, r.PathValue("id"))
	if err != nil {
		s.adminError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
}

func (s *Server) adminUpdateClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body clientBody
	if err := httpapi.DecodeJSON(w, r, maxClientBody, &body); err != nil {
		s.adminError(w, r, err)
		return
	}
	c := body.Client
	if c.ID == "" {
		c.ID = id
	}
	if c.ID != id {
		s.adminError(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidClientMetadata,
			"client_id: the body names %q but the path names %q; a client ID cannot change", c.ID, id))
		return
	}
	if err := s.updateClient(r.Context(), r, &c, body.Disabled); err != nil {
		s.adminError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, &c)
}

func (s *Server) adminDeleteClient(w http.ResponseWriter, r *http.Request) {
	if err := s.deleteClient(r.Context(), r, r.PathValue("id")); err != nil {
		s.adminError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminSetDisabled(w http.ResponseWriter, r *http.Request, disabled bool) {
	id := r.PathValue("id")
	if err := s.setClientDisabled(r.Context(), r, id, disabled); err != nil {
		s.adminError(w, r, err)
		return
	}
	c, err := s.clients.load(r.Context(), s.db, id)
	if err != nil {
		s.adminError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
}

// adminError maps the errors of client administration to API errors.
func (s *Server) adminError(w http.ResponseWriter, r *http.Request, err error) {
	var re *registrationError
	switch {
	case errors.As(err, &re):
		err = &httpapi.Error{Status: http.StatusBadRequest, Code: CodeInvalidClientMetadata, Message: re.err.Error()}
	case errors.Is(err, ErrClientExists):
		err = httpapi.Errorf(http.StatusConflict, CodeClientExists, "a client with this client_id is registered already")
	case errors.Is(err, ErrClientNotFound):
		err = httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no client with this client_id")
	}
	httpapi.WriteError(w, r, s.log, err)
}

// CreateClient registers c and audits the change. It fills c's defaults
// (Normalize) and timestamps. A validation error wraps
// ErrInvalidRegistration and names the field; an existing ID is
// ErrClientExists.
func (s *Server) CreateClient(ctx context.Context, c *Client) error {
	return s.createClient(ctx, nil, c)
}

// UpdateClient replaces the registration of the existing client c.ID and
// audits the change. Its enabled state and creation time are kept.
func (s *Server) UpdateClient(ctx context.Context, c *Client) error {
	return s.updateClient(ctx, nil, c, nil)
}

// GetClient returns the registration of client id, enabled or not, or
// ErrClientNotFound. The read is audited.
func (s *Server) GetClient(ctx context.Context, id string) (*Client, error) {
	return s.getClient(ctx, nil, id)
}

// ListClients returns every registered client, ordered by ID. The read is
// audited.
func (s *Server) ListClients(ctx context.Context) ([]*Client, error) { return s.listClients(ctx, nil) }

// DeleteClient removes client id and audits the change. Tokens it holds
// stay valid until they expire or are revoked.
func (s *Server) DeleteClient(ctx context.Context, id string) error {
	return s.deleteClient(ctx, nil, id)
}

// SetClientDisabled disables or re-enables client id and audits the
// change. A disabled client cannot authenticate.
func (s *Server) SetClientDisabled(ctx context.Context, id string, disabled bool) error {
	return s.setClientDisabled(ctx, nil, id, disabled)
}

// A change that grants access (create, update, enable) is undone when it
// cannot be audited; a change that removes access (delete, disable)
// stands, and the error is reported.

func (s *Server) createClient(ctx context.Context, r *http.Request, c *Client) error {
	if c == nil {
		return invalidRegistration(errors.New("no client"))
	}
	if err := c.Normalize(); err != nil {
		s.auditClientRefused(ctx, r, actCreate, c.ID, "invalid registration", err)
		return invalidRegistration(err)
	}
	if err := s.clients.create(ctx, c); err != nil {
		if errors.Is(err, ErrClientExists) {
			s.auditClientRefused(ctx, r, actCreate, c.ID, "client exists", nil)
		}
		return err
	}
	if err := s.emit(ctx, r, s.clientEvent(ctx, actCreate, c, "client registered")); err != nil {
		if rerr := s.clients.remove(context.WithoutCancel(ctx), c.ID); rerr != nil {
			s.log.ErrorContext(ctx, "undoing an unaudited client registration failed", "client_id", c.ID, "error", rerr)
		}
		return fmt.Errorf("register client %q: %w", c.ID, err)
	}
	return nil
}

// updateClient replaces c.ID's registration. disabled, when set, must
// match the client's state.
func (s *Server) updateClient(ctx context.Context, r *http.Request, c *Client, disabled *bool) error {
	if c == nil {
		return invalidRegistration(errors.New("no client"))
	}
	old, err := s.clients.load(ctx, s.db, c.ID)
	if err != nil {
		if errors.Is(err, ErrClientNotFound) {
			s.auditClientRefused(ctx, r, actUpdate, c.ID, "client not found", nil)
		}
		return err
	}
	if disabled != nil && *disabled != old.Disabled {
		err := fmt.Errorf("disabled: cannot change with an update; use POST %s/{id}/disable or /enable", PathAdminClients)
		s.auditClientRefused(ctx, r, actUpdate, c.ID, "invalid registration", err)
		return invalidRegistration(err)
	}
	if err := c.Normalize(); err != nil {
		s.auditClientRefused(ctx, r, actUpdate, c.ID, "invalid registration", err)
		return invalidRegistration(err)
	}
	if err := s.clients.update(ctx, c); err != nil {
		return err
	}
	if err := s.emit(ctx, r, s.clientEvent(ctx, actUpdate, c, "client registration replaced")); err != nil {
		if rerr := s.restoreClient(context.WithoutCancel(ctx), old); rerr != nil {
			s.log.ErrorContext(ctx, "undoing an unaudited client update failed", "client_id", c.ID, "error", rerr)
		}
		return fmt.Errorf("update client %q: %w", c.ID, err)
	}
	return nil
}

// restoreClient writes back a registration read before a change.
func (s *Server) restoreClient(ctx context.Context, old *Client) error {
	meta, err := json.Marshal(old)
	if err != nil {
		return fmt.Errorf("encode client %q: %w", old.ID, err)
	}
	_, err = s.db.ExecContext(ctx, "UPDATE identity_clients SET metadata = ?, updated_at = ? WHERE client_id = ?",
		string(meta), old.UpdatedAt.UnixMilli(), old.ID)
	s.clients.forget(old.ID)
	if err != nil {
		return fmt.Errorf("restore client %q: %w", old.ID, err)
	}
	return nil
}

func (s *Server) getClient(ctx context.Context, r *http.Request, id string) (*Client, error) {
	c, err := s.clients.load(ctx, s.db, id)
	if errors.Is(err, ErrClientNotFound) {
		s.auditClientRefused(ctx, r, actRead, id, "client not found", nil)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if err := s.emit(ctx, r, s.clientEvent(ctx, actRead, c, "client registration read")); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Server) listClients(ctx context.Context, r *http.Request) ([]*Client, error) {
	list, err := s.clients.list(ctx)
	if err != nil {
		return nil, err
	}
	e := newEvent(classEntityManagement, actRead, true, "")
	e.Message = "client registrations listed"
	e.Actor = s.adminActor(ctx)
	e.Unmapped = map[string]any{"count": len(list)}
	if err := s.emit(ctx, r, e); err != nil {
		return nil, err
	}
	return list, nil
}

func (s *Server) deleteClient(ctx context.Context, r *http.Request, id string) error {
	old, err := s.clients.load(ctx, s.db, id)
	if errors.Is(err, ErrClientNotFound) {
		s.auditClientRefused(ctx, r, actDelete, id, "client not found", nil)
		return err
	}
	if err != nil {
		return err
	}
	if err := s.clients.remove(ctx, id); err != nil {
		return err
	}
	if err := s.emit(ctx, r, s.clientEvent(ctx, actDelete, old, "client deleted")); err != nil {
		return fmt.Errorf("client %q deleted but not audited: %w", id, err)
	}
	return nil
}

func (s *Server) setClientDisabled(ctx context.Context, r *http.Request, id string, disabled bool) error {
	act, msg := actEnable, "client enabled"
	if disabled {
		act, msg = actDisable, "client disabled"
	}
	old, err := s.clients.load(ctx, s.db, id)
	if errors.Is(err, ErrClientNotFound) {
		s.auditClientRefused(ctx, r, act, id, "client not found", nil)
		return err
	}
	if err != nil {
		return err
	}
	if err := s.clients.setDisabled(ctx, id, disabled); err != nil {
		return err
	}
	old.Disabled = disabled
	if err := s.emit(ctx, r, s.clientEvent(ctx, act, old, msg)); err != nil {
		if disabled {
			return fmt.Errorf("client %q disabled but not audited: %w", id, err)
		}
		if rerr := s.clients.setDisabled(context.WithoutCancel(ctx), id, true); rerr != nil {
			s.log.ErrorContext(ctx, "undoing an unaudited client enable failed", "client_id", id, "error", rerr)
		}
		return fmt.Errorf("enable client %q: %w", id, err)
	}
	return nil
}

// clientEvent is the audit event of a successful change to c. It records
// what the registration allows, never key material beyond key IDs.
func (s *Server) clientEvent(ctx context.Context, act int, c *Client, msg string) *audit.Event {
	e := newEvent(classEntityManagement, act, true, "")
	e.Message = msg
	e.Actor = s.adminActor(ctx)
	e.Resources = []audit.Resource{{Type: "oauth_client", UID: c.ID, Name: c.Name}}
	var kids []string
	if c.JWKS != nil {
		for _, k := range c.JWKS.Keys {
			kids = append(kids, k.KeyID)
		}
	}
	e.Unmapped = map[string]any{
		"profile":                    c.Profile,
		"token_endpoint_auth_method": c.TokenEndpointAuthMethod,
		"grant_types":                c.GrantTypes,
		"scopes":                     c.Scopes,
		"audiences":                  c.Audiences,
		"redirect_uris":              c.RedirectURIs,
		"key_ids":                    kids,
		"dpop_bound_access_tokens":   c.DPoPBoundAccessTokens,
		"tls_client_certificate_bound_access_tokens": c.TLSClientCertificateBoundAccessTokens,
		"disabled": c.Disabled,
	}
	return e
}

// auditClientRefused records a refused change. The operation fails
// whatever happens here, so a failure to audit is only logged.
func (s *Server) auditClientRefused(ctx context.Context, r *http.Request, act int, id, detail string, cause error) {
	e := newEvent(classEntityManagement, act, false, detail)
	e.Actor = s.adminActor(ctx)
	e.Resources = []audit.Resource{{Type: "oauth_client", UID: auditClip(id, 128)}}
	if cause != nil {
		e.Message = auditClip(cause.Error(), 512)
	}
	if err := s.emit(ctx, r, e); err != nil {
		s.log.WarnContext(ctx, "auditing a refused client change failed", "error", err)
	}
}

// auditClip cuts s to at most n bytes.
func auditClip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// NewClientKey returns the JWK to register for a client's public key: alg
// from the key type (Ed25519 EdDSA, P-256 ES256, RSA of 2048 bits or more
// PS256), use "sig", and kid the RFC 7638 SHA-256 thumbprint. cert, when
// given, is the self-signed certificate of a self_signed_tls_client_auth
// client, carried in x5c; its public key must be pub.
func NewClientKey(pub crypto.PublicKey, cert *x509.Certificate) (jose.JSONWebKey, error) {
	var alg string
	switch k := pub.(type) {
	case ed25519.PublicKey:
		alg = string(jose.EdDSA)
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return jose.JSONWebKey{}, fmt.Errorf("ECDSA key on %s: only P-256 (ES256) is allowed", k.Curve.Params().Name)
		}
		alg = string(jose.ES256)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return jose.JSONWebKey{}, fmt.Errorf("RSA key of %d bits: at least 2048 are needed", k.N.BitLen())
		}
		alg = string(jose.PS256)
	default:
		return jose.JSONWebKey{}, fmt.Errorf("unsupported public key type %T: use Ed25519, ECDSA P-256 or RSA", pub)
	}
	jwk := jose.JSONWebKey{Key: pub, Algorithm: alg, Use: "sig"}
	if cert != nil {
		if pk, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(pub) {
			return jose.JSONWebKey{}, errors.New("the certificate is not for this public key")
		}
		jwk.Certificates = []*x509.Certificate{cert}
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("key thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return jwk, nil
}
