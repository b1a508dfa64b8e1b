// Package caclient is the Go client of the control plane's CA API, used by
// `bulwark agent`: joining with a join token, renewing the agent's own
// SVID, fetching its registration entries, workload X.509-SVIDs and
// JWT-SVIDs, the trust bundle and the deny list.
package caclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// maxAnswer bounds what the client reads from the server.
const maxAnswer = 8 << 20

// Client calls the CA API of one control plane. Its zero value is not
// usable; build it with New.
type Client struct {
	base      string
	serverCAs *x509.CertPool
	cert      *tls.Certificate
	hc        *http.Client
}

// New returns a client of the control plane at baseURL (https://host:port)
// that verifies the server with serverCAs (nil: the system roots). It
// presents no client certificate: only Join, Bundle and DenyList work.
func New(baseURL string, serverCAs *x509.CertPool) *Client {
	return newClient(strings.TrimRight(baseURL, "/"), serverCAs, nil)
}

func newClient(base string, serverCAs *x509.CertPool, cert *tls.Certificate) *Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: serverCAs}
	if cert != nil {
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	tr := &http.Transport{
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &Client{base: base, serverCAs: serverCAs, cert: cert, hc: &http.Client{Transport: tr, Timeout: 0}}
}

// WithCertificate returns a client that presents cert (the agent's SVID
// and key) as TLS client certificate. The receiver is unchanged.
func (c *Client) WithCertificate(cert tls.Certificate) *Client {
	return newClient(c.base, c.serverCAs, &cert)
}

// CloseIdleConnections closes the client's idle connections, e.g. after
// a new certificate replaced this client.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// APIError is an error answer of the server: the status and the stable
// code and message of its JSON error body.
type APIError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("ca api: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RequestID != "" {
		s += " (request ID " + e.RequestID + ")"
	}
	return s
}

// IsCode reports whether err is an *APIError with code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

// do sends in as JSON (if not nil) and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bulwark-agent")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if len(raw) > maxAnswer {
		return fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &APIError{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode), RequestID: resp.Header.Get("X-Request-ID")}
		var eb httpapi.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			e.Code, e.Message = eb.Error.Code, eb.Error.Message
		}
		return fmt.Errorf("%s %s: %w", method, path, e)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// parseCerts parses a DER chain.
func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// JoinResult is the answer of a join: the agent's identity, its SVID
// (leaf first) and the trust bundle.
type JoinResult struct {
	ID     spiffeid.ID
	SVID   []*x509.Certificate
	Bundle []*x509.Certificate
}

// Join exchanges a one-time join token and a CSR for the agent's first
// SVID. A bad, used or expired token is an *APIError with code
// ca.CodeInvalidJoinToken.
func (c *Client) Join(ctx context.Context, token string, csrDER []byte) (*JoinResult, error) {
	var ans ca.SVIDAnswer
	if err := c.do(ctx, http.MethodPost, ca.PathJoin, ca.JoinRequest{Token: token, CSR: csrDER}, &ans); err != nil {
		return nil, err
	}
	id, svid, err := parseSVID(ans.SPIFFEID, ans.SVID)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	bundle, err := parseCerts(ans.Bundle)
	if err != nil {
		return nil, fmt.Errorf("join: bundle: %w", err)
	}
	return &JoinResult{ID: id, SVID: svid, Bundle: bundle}, nil
}

func parseSVID(idStr string, ders [][]byte) (spiffeid.ID, []*x509.Certificate, error) {
	id, err := spiffeid.FromString(idStr)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("spiffe_id: %w", err)
	}
	chain, err := parseCerts(ders)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("svid: %w", err)
	}
	if len(chain) == 0 {
		return spiffeid.ID{}, nil, errors.New("svid: empty chain")
	}
	return id, chain, nil
}

// Renew signs a new SVID of the agent's own identity; the client must
// present the current one.
func (c *Client) Renew(ctx context.Context, csrDER []byte) (spiffeid.ID, []*x509.Certificate, error) {
	var ans ca.SVIDAnswer
	if err := c.do(ctx, http.MethodPost, ca.PathAgentRenew, ca.RenewRequest{CSR: csrDER}, &ans); err != nil {
		return spiffeid.ID{}, nil, err
	}
	id, chain, err := parseSVID(ans.SPIFFEID, ans.SVID)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("renew: %w", err)
	}
	return id, chain, nil
}

// Entries returns the registration entries this agent serves.
func (c *Client) Entries(ctx context.Context) ([]ca.Entry, error) {
	var ans ca.EntryList
	if err := c.do(ctx, http.MethodGet, ca.PathAgentEntries, nil, &ans); err != nil {
		return nil, err
	}
	out := make([]ca.Entry, 0, len(ans.Entries))
	for _, j := range ans.Entries {
		e, err := ca.EntryFromJSON(j)
		if err != nil {
			return nil, fmt.Errorf("entries: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// SVIDRequest asks for the X.509-SVID of one entry.
type SVIDRequest struct {
	EntryID string
	CSR     []byte
}

// SVIDResult is an issued workload SVID.
type SVIDResult struct {
	EntryID   string
	ID        spiffeid.ID
	SVID      []*x509.Certificate
	ExpiresAt time.Time
}

// SVIDError is a refused request of a batch.
type SVIDError = ca.SVIDError

// SVIDs signs a batch of workload SVIDs (at most 100). Requests the server
// refused one by one come back as SVIDErrors; an entry of another agent
// fails the whole batch.
func (c *Client) SVIDs(ctx context.Context, reqs []SVIDRequest) ([]SVIDResult, []SVIDError, error) {
	body := ca.SVIDsRequest{Requests: make([]ca.SVIDRequestJSON, len(reqs))}
	for i, r := range reqs {
		body.Requests[i] = ca.SVIDRequestJSON{EntryID: r.EntryID, CSR: r.CSR}
	}
	var ans ca.SVIDsAnswer
	if err := c.do(ctx, http.MethodPost, ca.PathAgentSVIDs, body, &ans); err != nil {
		return nil, nil, err
	}
	out := make([]SVIDResult, 0, len(ans.SVIDs))
	for _, s := range ans.SVIDs {
		id, chain, err := parseSVID(s.SPIFFEID, s.SVID)
		if err != nil {
			return nil, nil, fmt.Errorf("svids: entry %s: %w", s.EntryID, err)
		}
		out = append(out, SVIDResult{EntryID: s.EntryID, ID: id, SVID: chain, ExpiresAt: s.ExpiresAt})
	}
	return out, ans.Errors, nil
}

// JWTSVID signs a JWT-SVID for id, which must be an entry of this agent.
func (c *Client) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, error) {
	var ans ca.JWTSVIDAnswer
	if err := c.do(ctx, http.MethodPost, ca.PathAgentJWTSVIDs, ca.JWTSVIDRequest{SPIFFEID: id.String(), Audience: audience}, &ans); err != nil {
		return "", err
	}
	return ans.Token, nil
}

// Bundle fetches the trust bundle: the X.509 authorities (the trusted
// intermediates) and the JWT authorities.
func (c *Client) Bundle(ctx context.Context) (*spiffebundle.Bundle, error) {
	var ans ca.BundleAnswer
	if err := c.do(ctx, http.MethodGet, ca.PathBundle, nil, &ans); err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(ans.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bundle: trust_domain: %w", err)
	}
	certs, err := parseCerts(ans.X509Authorities)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	b := spiffebundle.New(td)
	b.SetX509Authorities(certs)
	for _, k := range ans.JWTAuthorities.Keys {
		if k.KeyID == "" || !k.IsPublic() {
			return nil, errors.New("bundle: a JWT authority lacks a kid or is not a public key")
		}
		if err := b.AddJWTAuthority(k.KeyID, crypto.PublicKey(k.Key)); err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
	}
	if ans.RefreshHintSeconds >= 0 {
		b.SetRefreshHint(time.Duration(ans.RefreshHintSeconds) * time.Second)
	}
	b.SetSequenceNumber(ans.Sequence)
	return b, nil
}

// DenyEntry is a deny-list entry.
type DenyEntry = ca.DenyEntry

// DenyList returns the deny-list entries after sequence number after, and
// the sequence number to ask after next time. With wait > 0 the server
// holds the request until a new entry arrives or wait (at most 30 s) ends.
func (c *Client) DenyList(ctx context.Context, after int64, wait time.Duration) ([]DenyEntry, int64, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if wait > 0 {
		q.Set("wait", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	}
	var ans ca.DenyListAnswer
	if err := c.do(ctx, http.MethodGet, ca.PathDenyList+"?"+q.Encode(), nil, &ans); err != nil {
		return nil, after, err
	}
	out := make([]DenyEntry, 0, len(ans.Entries))
	for _, d := range ans.Entries {
		out = append(out, DenyEntry{Seq: d.Seq, Kind: d.Kind, Value: d.Value, Reason: d.Reason})
	}
	return out, max(ans.Next, after), nil
}

// Events posts audit events (at most 100, of classes 3002, 3004 or 6003)
// for the control plane to append with the agent as actor.
func (c *Client) Events(ctx context.Context, events []*audit.Event) error {
	body := ca.EventsRequest{Events: make([]json.RawMessage, len(events))}
	for i, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("events: encode event %d: %w", i, err)
		}
		body.Events[i] = b
	}
	return c.do(ctx, http.MethodPost, ca.PathAgentEvents, body, nil)
}
