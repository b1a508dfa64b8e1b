package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
)

// NewControlPlane returns the Connector that reaches the control plane at
// serverURL through package caclient, verifying it with serverCAs (nil:
// the system roots).
func NewControlPlane(serverURL string, serverCAs *x509.CertPool) Connector {
	base := caclient.New(serverURL, serverCAs)
	return func(cert *tls.Certificate) (ControlPlane, error) {
		if cert == nil {
			return &caClient{c: base}, nil
		}
		return &caClient{c: base.WithCertificate(*cert)}, nil
	}
}

// caClient adapts *caclient.Client to ControlPlane.
type caClient struct{ c *caclient.Client }

var _ ControlPlane = (*caClient)(nil)

func (cc *caClient) Join(ctx context.Context, token string, csrDER []byte) (*Joined, error) {
	r, err := cc.c.Join(ctx, token, csrDER)
	if err != nil {
		return nil, err
	}
	return &Joined{ID: r.ID, SVID: r.SVID, Bundle: r.Bundle}, nil
}

func (cc *caClient) Renew(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error) {
	_, chain, err := cc.c.Renew(ctx, csrDER)
	return chain, err
}

func (cc *caClient) Entries(ctx context.Context) ([]Entry, error) {
	list, err := cc.c.Entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(list))
	for _, e := range list {
		we := Entry{ID: e.ID, SPIFFEID: e.SPIFFEID, ParentID: e.ParentID, TTL: e.TTL}
		for _, s := range e.Selectors {
			we.Selectors = append(we.Selectors, Selector{Type: s.Type, Value: s.Value})
		}
		out = append(out, we)
	}
	return out, nil
}

func (cc *caClient) SVIDs(ctx context.Context, reqs []SVIDRequest) ([]SVIDResult, []SVIDError, error) {
	in := make([]caclient.SVIDRequest, len(reqs))
	for i, r := range reqs {
		in[i] = caclient.SVIDRequest{EntryID: r.EntryID, CSR: r.CSR}
	}
	res, refused, err := cc.c.SVIDs(ctx, in)
	if err != nil {
		return nil, nil, err
	}
	out := make([]SVIDResult, len(res))
	for i, r := range res {
		out[i] = SVIDResult{EntryID: r.EntryID, ID: r.ID, SVID: r.SVID, ExpiresAt: r.ExpiresAt}
	}
	errs := make([]SVIDError, len(refused))
	for i, r := range refused {
		errs[i] = SVIDError{EntryID: r.EntryID, Code: r.Code, Message: r.Message}
	}
	return out, errs, nil
}

func (cc *caClient) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, error) {
	return cc.c.JWTSVID(ctx, id, audience)
}

func (cc *caClient) Bundle(ctx context.Context) (*spiffebundle.Bundle, error) {
	return cc.c.Bundle(ctx)
}

func (cc *caClient) DenyList(ctx context.Context, after int64, wait time.Duration) ([]DenyEntry, int64, error) {
	list, next, err := cc.c.DenyList(ctx, after, wait)
	if err != nil {
		return nil, after, err
	}
	out := make([]DenyEntry, len(list))
	for i, d := range list {
		out[i] = DenyEntry{Seq: d.Seq, Kind: d.Kind, Value: d.Value, Reason: d.Reason}
	}
	return out, next, nil
}

func (cc *caClient) Events(ctx context.Context, events []*audit.Event) error {
	if err := cc.c.Events(ctx, events); err != nil {
		return fmt.Errorf("post audit events: %w", err)
	}
	return nil
}

// CloseIdleConnections closes the client's idle connections once a new
// agent SVID replaced it.
func (cc *caClient) CloseIdleConnections() { cc.c.CloseIdleConnections() }
