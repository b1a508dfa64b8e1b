package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// ControlPlane is what the agent needs from the control plane's CA API.
// NewControlPlane adapts the caclient package to it; a value presents the
// agent's SVID as its TLS client certificate when it was made with one.
type ControlPlane interface {
	// Join redeems a one-time join token for the agent's first SVID.
	Join(ctx context.Context, token string, csrDER []byte) (*Joined, error)
	// Renew returns a new SVID for the agent itself.
	Renew(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error)
	// Entries returns the registration entries assigned to the agent.
	Entries(ctx context.Context) ([]Entry, error)
	// SVIDs signs a batch of workload CSRs, at most 100.
	SVIDs(ctx context.Context, reqs []SVIDRequest) ([]SVIDResult, []SVIDError, error)
	// JWTSVID returns a JWT-SVID for one of the agent's entries.
	JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, error)
	// Bundle returns the trust domain's current trust bundle.
	Bundle(ctx context.Context) (*spiffebundle.Bundle, error)
	// DenyList long-polls the deny entries after sequence number after and
	// returns them with the sequence number to ask from next.
	DenyList(ctx context.Context, after int64, wait time.Duration) ([]DenyEntry, int64, error)
	// Events posts audit events about the node (attestation failures).
	Events(ctx context.Context, events []*audit.Event) error
}

// Connector returns a ControlPlane client that presents cert as its TLS
// client certificate, or none when cert is nil (only Join works then).
type Connector func(cert *tls.Certificate) (ControlPlane, error)

// Joined is the result of a join: the agent's SPIFFE ID, its SVID chain
// (leaf first) and the X.509 trust bundle.
type Joined struct {
	ID     spiffeid.ID
	SVID   []*x509.Certificate
	Bundle []*x509.Certificate
}

// Selector is one attestation property an entry requires, e.g.
// {"unix", "uid:1001"}.
type Selector struct{ Type, Value string }

// String returns the selector as "type:value".
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Entry is a registration entry: the SPIFFE ID a workload whose
// attestation matches every selector receives.
type Entry struct {
	ID        string
	SPIFFEID  spiffeid.ID
	ParentID  spiffeid.ID
	Selectors []Selector
	TTL       time.Duration
}

// SVIDRequest asks for the SVID of one entry.
type SVIDRequest struct {
	EntryID string
	CSR     []byte
}

// SVIDResult is a signed workload SVID.
type SVIDResult struct {
	EntryID   string
	ID        spiffeid.ID
	SVID      []*x509.Certificate
	ExpiresAt time.Time
}

// SVIDError is a refused request of a batch.
type SVIDError struct {
	EntryID, Code, Message string
}

// DenyEntry is one deny-list entry: Kind "spiffe_id" or "serial".
type DenyEntry struct {
	Seq                 int64
	Kind, Value, Reason string
}
