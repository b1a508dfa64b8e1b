package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Rotation under an offline root, in three steps that never bring the
// root key to the server:
//
//  1. the server makes an intermediate key (sealed, pending) and returns
//     its CSR (IntermediateCSR);
//  2. on the offline machine, SignIntermediateCSR signs it with the root;
//  3. the server checks the certificate and makes it the signing
//     intermediate (InstallIntermediate), as Rotate would.

// pendingIntermediateTTL is how long a pending intermediate key waits
// for its certificate.
const pendingIntermediateTTL = 7 * 24 * time.Hour

// maxIntermediateTTL bounds the lifetime SignIntermediateCSR grants.
const maxIntermediateTTL = 8760 * time.Hour

// IntermediateCSR makes a new intermediate key, keeps it sealed as
// pending, and returns its certificate signing request (DER) for the
// offline root. Audited.
func (a *Authority) IntermediateCSR(ctx context.Context) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	id := "int_" + randomHex(8)
	sealed, err := a.sealKey(key, intermediateSealContext(id))
	if err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "Bulwark intermediate CA " + a.cfg.TrustDomain.Name(), Organization: []string{"Bulwark"}},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	if _, err := a.db.ExecContext(ctx, "INSERT INTO ca_pending_intermediates (id, public_key, sealed_key, created_at) VALUES (?, ?, ?, ?)",
		id, spki, sealed, a.now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	if err := a.emit(ctx, newEvent(classEntityManagement, actCreate, true, "intermediate key created, awaiting the offline root's signature",
		actorFor(ctx, spiffeid.ID{}), audit.Resource{Type: resIntermediate, UID: id})); err != nil {
		return nil, fmt.Errorf("intermediate CSR: %w", err)
	}
	return csr, nil
}

// SignIntermediateCSR signs an intermediate CSR made by IntermediateCSR
// with the root (on the offline machine): an ECDSA intermediate for td,
// valid for ttl (capped by the root), name-constrained to td and unable
// to sign further CAs. The CSR's subject and extensions are ignored.
func SignIntermediateCSR(td spiffeid.TrustDomain, root crypto.Signer, rootCert *x509.Certificate, csrDER []byte, ttl time.Duration) (*x509.Certificate, error) {
	now := time.Now()
	if err := checkRoot(td, rootCert, root, now); err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	if ttl <= 0 || ttl > maxIntermediateTTL {
		return nil, fmt.Errorf("sign intermediate: %w: lifetime %s out of range (0, %s]", ErrInvalid, ttl, maxIntermediateTTL)
	}
	if len(csrDER) == 0 || len(csrDER) > maxCSRBytes {
		return nil, fmt.Errorf("sign intermediate: %w: CSR missing or too large", ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w: parse CSR: %w", ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign intermediate: %w: CSR signature: %w", ErrInvalid, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || (pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384()) {
		return nil, fmt.Errorf("sign intermediate: %w: the key must be ECDSA P-256 or P-384", ErrInvalid)
	}
	cert, err := signIntermediate(td, root, rootCert, pub, ttl, now)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate: %w", err)
	}
	return cert, nil
}

// InstallIntermediate completes a rotation under an offline root: cert
// must be an intermediate for this trust domain (CA, path length 0, URI
// name constraint to the trust domain, valid now and for more than an SVID
// lifetime), signed by rootCert, for a pending key of IntermediateCSR. It
// then becomes the signing intermediate, as with Rotate. Audited.
func (a *Authority) InstallIntermediate(ctx context.Context, cert, rootCert *x509.Certificate) error {
	actor := actorFor(ctx, spiffeid.ID{})
	id, sealed, err := a.checkInstall(ctx, cert, rootCert)
	if err != nil {
		a.emitRefusal(ctx, newEvent(classEntityManagement, actCreate, false, err.Error(), actor, audit.Resource{Type: resIntermediate}))
		return err
	}
	if _, err := a.activate(ctx, actor, id, cert, sealed, nil, id); err != nil {
		return err
	}
	return nil
}

func (a *Authority) checkInstall(ctx context.Context, cert, rootCert *x509.Certificate) (string, []byte, error) {
	now := a.now()
	td := a.cfg.TrustDomain
	if cert == nil {
		return "", nil, fmt.Errorf("install intermediate: %w: certificate is required", ErrInvalid)
	}
	if err := checkRootCert(td, rootCert, now); err != nil {
		return "", nil, fmt.Errorf("install intermediate: %w", err)
	}
	if err := cert.CheckSignatureFrom(rootCert); err != nil {
		return "", nil, fmt.Errorf("install intermediate: %w: not signed by the root: %w", ErrInvalid, err)
	}
	switch {
	case !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return "", nil, fmt.Errorf("install intermediate: %w: not a CA certificate that may sign certificates", ErrInvalid)
	case cert.MaxPathLen != 0 || !cert.MaxPathLenZero:
		return "", nil, fmt.Errorf("install intermediate: %w: path length must be 0", ErrInvalid)
	case !slices.Equal(cert.PermittedURIDomains, []string{td.Name()}) || !cert.PermittedDNSDomainsCritical:
		return "", nil, fmt.Errorf("install intermediate: %w: URI name constraint must be exactly %s (critical)", ErrInvalid, td.Name())
	case now.Before(cert.NotBefore) || !cert.NotAfter.After(now.Add(a.cfg.SVIDTTL)):
		return "", nil, fmt.Errorf("install intermediate: %w: not valid now or expires within one SVID lifetime", ErrInvalid)
	}
	rows, err := a.db.QueryContext(ctx, "SELECT id, public_key, sealed_key FROM ca_pending_intermediates WHERE created_at > ?",
		now.Add(-pendingIntermediateTTL).UnixMilli())
	if err != nil {
		return "", nil, fmt.Errorf("install intermediate: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id           string
			spki, sealed []byte
		)
		if err := rows.Scan(&id, &spki, &sealed); err != nil {
			return "", nil, fmt.Errorf("install intermediate: %w", err)
		}
		if !bytes.Equal(spki, cert.RawSubjectPublicKeyInfo) {
			continue
		}
		key, err := a.openKey(sealed, intermediateSealContext(id))
		if err != nil {
			return "", nil, fmt.Errorf("install intermediate %s: %w", id, err)
		}
		if !publicKeyMatches(cert, key) {
			return "", nil, fmt.Errorf("install intermediate %s: %w: key does not match", id, ErrInvalid)
		}
		return id, sealed, nil
	}
	if err := rows.Err(); err != nil {
		return "", nil, fmt.Errorf("install intermediate: %w", err)
	}
	return "", nil, fmt.Errorf("install intermediate: %w: no pending intermediate key for this certificate (make one with IntermediateCSR)", ErrNotFound)
}
