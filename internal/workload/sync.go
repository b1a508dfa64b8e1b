package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxBatch is the control plane's limit of SVID requests per call.
const maxBatch = 100

// newKeyAndCSR generates a fresh ECDSA P-256 key and a CSR carrying id as
// its one URI SAN (none when id is zero).
func newKeyAndCSR(id spiffeid.ID) (crypto.Signer, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{}}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, keyDER, csr, nil
}

// ensureJoined redeems the join token on the first start.
func (a *Agent) ensureJoined(ctx context.Context) error {
	a.mu.Lock()
	joined := a.st.joined()
	a.mu.Unlock()
	if joined {
		return nil
	}
	key, keyDER, csr, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	cp, err := a.connect(nil)
	if err != nil {
		return fmt.Errorf("join: control plane client: %w", err)
	}
	// The join client is used once: do not leave its connection open.
	if c, ok := cp.(interface{ CloseIdleConnections() }); ok {
		defer c.CloseIdleConnections()
	}
	res, err := cp.Join(ctx, a.cfg.JoinToken, csr)
	if err != nil {
		return fmt.Errorf("join the control plane: %w", err)
	}
	if len(res.SVID) == 0 || !publicKeyMatches(res.SVID[0], key) {
		return errors.New("join: the control plane returned an SVID for another key")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.agentID, a.st.agentChain, a.st.agentKey, a.st.agentKeyDER, a.st.agentRecv = res.ID, res.SVID, key, keyDER, a.cfg.Now()
	if b, err := bundleFromX509(res.ID.TrustDomain(), res.Bundle); err == nil {
		a.st.bundle = b
	}
	a.resetClientLocked()
	a.saveLocked()
	a.log.Info("agent joined the control plane", logSPIFFEID, res.ID.String())
	return nil
}

// syncLoop keeps the agent SVID, entries, bundle and workload SVIDs current.
// A round runs every SyncInterval, and earlier when an SVID reaches its
// rotation point before then, so that renewal never waits most of a
// SyncInterval past it (with short lifetimes that could reach expiry).
func (a *Agent) syncLoop(ctx context.Context) {
	for {
		a.syncOnce(ctx)
		wait := a.cfg.SyncInterval
		if due := a.nextRenewal(); !due.IsZero() {
			wait = min(wait, max(due.Sub(a.cfg.Now()), minRenewWait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// minRenewWait spaces rounds when a renewal keeps failing at its due time.
const minRenewWait = 200 * time.Millisecond

// nextRenewal returns the earliest rotation point of the agent's own SVID
// and the workload SVIDs it holds, or the zero time if it holds none.
func (a *Agent) nextRenewal() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	consider := func(cert *x509.Certificate, received time.Time) {
		if due := a.renewalPoint(cert, received); next.IsZero() || due.Before(next) {
			next = due
		}
	}
	if len(a.st.agentChain) > 0 {
		consider(a.st.agentChain[0], a.st.agentRecv)
	}
	for _, sv := range a.st.svids {
		if len(sv.chain) > 0 {
			consider(sv.chain[0], sv.received)
		}
	}
	return next
}

// syncOnce runs one round; every failure is logged and leaves what is still
// valid in place.
func (a *Agent) syncOnce(ctx context.Context) {
	if err := a.renewAgent(ctx); err != nil {
		a.log.Warn("agent SVID renewal failed", logErr, err)
	}
	if err := a.refreshBundle(ctx); err != nil {
		a.log.Warn("bundle refresh failed", logErr, err)
	}
	if err := a.refreshEntries(ctx); err != nil {
		a.log.Warn("entry refresh failed", logErr, err)
	}
	if err := a.refreshSVIDs(ctx); err != nil {
		a.log.Warn("workload SVID refresh failed", logErr, err)
	}
	a.pruneExpired()
}

// dueForRenewal reports whether cert, received at received, has passed
// the rotation point. The lifetime counts from the later of NotBefore and
// the reception: a CA backdates NotBefore for clock skew, and counting from
// it would renew too early (at once, for a backdate as long as half the
// TTL).
func (a *Agent) dueForRenewal(cert *x509.Certificate, received time.Time) bool {
	return !a.cfg.Now().Before(a.renewalPoint(cert, received))
}

// renewalPoint is when cert, received at received, reaches its rotation
// point (see dueForRenewal).
func (a *Agent) renewalPoint(cert *x509.Certificate, received time.Time) time.Time {
	start := cert.NotBefore
	if received.After(start) && received.Before(cert.NotAfter) {
		start = received
	}
	return start.Add(time.Duration(float64(cert.NotAfter.Sub(start)) * a.cfg.RotationFraction))
}

func (a *Agent) renewAgent(ctx context.Context) error {
	a.mu.Lock()
	leaf, id, recv := a.st.agentChain[0], a.st.agentID, a.st.agentRecv
	a.mu.Unlock()
	if !a.dueForRenewal(leaf, recv) {
		return nil
	}
	if !a.cfg.Now().Before(leaf.NotAfter) {
		return errors.New("the agent SVID has expired: the agent must join again with a new token")
	}
	cp, err := a.controlPlane()
	if err != nil {
		return err
	}
	key, keyDER, csr, err := newKeyAndCSR(id)
	if err != nil {
		return err
	}
	chain, err := cp.Renew(ctx, csr)
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if len(chain) == 0 || !publicKeyMatches(chain[0], key) {
		return errors.New("renew: the control plane returned an SVID for another key")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.agentChain, a.st.agentKey, a.st.agentKeyDER, a.st.agentRecv = chain, key, keyDER, a.cfg.Now()
	a.resetClientLocked()
	a.saveLocked()
	a.log.Info("agent SVID renewed", logSerial, serialHex(chain[0].SerialNumber))
	return nil
}

func (a *Agent) refreshBundle(ctx context.Context) error {
	cp, err := a.controlPlane()
	if err != nil {
		return err
	}
	b, err := cp.Bundle(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if b.TrustDomain() != a.st.agentID.TrustDomain() {
		return fmt.Errorf("bundle for trust domain %s, want %s", b.TrustDomain(), a.st.agentID.TrustDomain())
	}
	if a.st.bundle != nil && a.st.bundle.Equal(b) {
		return nil
	}
	a.st.bundle = b
	a.saveLocked()
	a.notifyLocked()
	return nil
}

func (a *Agent) refreshEntries(ctx context.Context) error {
	cp, err := a.controlPlane()
	if err != nil {
		return err
	}
	entries, err := cp.Entries(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if reflect.DeepEqual(a.st.entries, entries) {
		return nil
	}
	a.st.entries = entries
	live := make(map[string]Entry, len(entries))
	for _, e := range entries {
		live[e.ID] = e
	}
	changed := false
	for id, sv := range a.st.svids {
		if e, ok := live[id]; !ok || e.SPIFFEID != sv.id {
			delete(a.st.svids, id)
			changed = true
		}
	}
	a.saveLocked()
	// Also without a withdrawn SVID: a stream whose caller matches a new
	// or changed entry re-evaluates what it may receive.
	a.notifyLocked()
	if changed {
		a.log.Info("workload SVIDs of removed entries dropped")
	}
	return nil
}

// refreshSVIDs requests an SVID for every entry without a current one.
func (a *Agent) refreshSVIDs(ctx context.Context) error {
	type pending struct {
		entry  Entry
		key    crypto.Signer
		keyDER []byte
	}
	a.mu.Lock()
	var todo []Entry
	for _, e := range a.st.entries {
		if a.st.deny.ids[e.SPIFFEID.String()] {
			continue
		}
		if sv, ok := a.st.svids[e.ID]; ok && !a.dueForRenewal(sv.chain[0], sv.received) {
			continue
		}
		todo = append(todo, e)
	}
	a.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	cp, err := a.controlPlane()
	if err != nil {
		return err
	}
	var errs []error
	for len(todo) > 0 {
		batch := todo[:min(len(todo), maxBatch)]
		todo = todo[len(batch):]
		byEntry := map[string]pending{}
		reqs := make([]SVIDRequest, 0, len(batch))
		for _, e := range batch {
			key, keyDER, csr, err := newKeyAndCSR(e.SPIFFEID)
			if err != nil {
				return err
			}
			byEntry[e.ID] = pending{e, key, keyDER}
			reqs = append(reqs, SVIDRequest{EntryID: e.ID, CSR: csr})
		}
		results, refused, err := cp.SVIDs(ctx, reqs)
		if err != nil {
			return fmt.Errorf("request SVIDs: %w", err)
		}
		for _, r := range refused {
			a.log.Warn("SVID request refused", logEntry, r.EntryID, "code", r.Code, "message", r.Message)
		}
		a.mu.Lock()
		n := 0
		for _, r := range results {
			p, ok := byEntry[r.EntryID]
			switch {
			case !ok || len(r.SVID) == 0:
				errs = append(errs, fmt.Errorf("unexpected SVID for entry %q", r.EntryID))
				continue
			case !publicKeyMatches(r.SVID[0], p.key):
				errs = append(errs, fmt.Errorf("SVID for entry %q is for another key", r.EntryID))
				continue
			}
			id, err := leafID(r.SVID[0])
			if err != nil || id != p.entry.SPIFFEID {
				errs = append(errs, fmt.Errorf("SVID for entry %q carries the wrong SPIFFE ID", r.EntryID))
				continue
			}
			sv := &svid{entryID: r.EntryID, id: id, chain: r.SVID, key: p.key, keyDER: p.keyDER, received: a.cfg.Now()}
			if a.st.denied(id, sv.serial()) {
				continue
			}
			a.st.svids[r.EntryID] = sv
			n++
		}
		if n > 0 {
			a.saveLocked()
			a.notifyLocked()
			a.log.Info("workload SVIDs issued", logCount, n)
		}
		a.mu.Unlock()
	}
	return errors.Join(errs...)
}

// pruneExpired drops SVIDs that have expired, so they are never served.
func (a *Agent) pruneExpired() {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for id, sv := range a.st.svids {
		if !now.Before(sv.chain[0].NotAfter) {
			delete(a.st.svids, id)
			changed = true
			a.log.Warn("workload SVID expired", logEntry, id, logSPIFFEID, sv.id.String())
		}
	}
	if changed {
		a.saveLocked()
		a.notifyLocked()
	}
}

func publicKeyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}
