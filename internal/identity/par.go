package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// parResponse is the answer to a pushed authorization request (RFC 9126
// §2.2).
type parResponse struct {
	RequestURI string `json:"request_uri"`
	ExpiresIn  int    `json:"expires_in"`
}

// par is the pushed authorization request endpoint (RFC 9126): an
// authenticated client pushes the parameters of its authorization request
// and gets a single-use, short-lived request_uri to send the user with.
// The parameters are validated here exactly as the authorization endpoint
// would, so the client learns of errors directly.
func (s *Server) par(w http.ResponseWriter, r *http.Request) {
	if err := s.pushRequest(w, r); err != nil {
		var oe *Error
		code := ErrServerError.Code
		if errors.As(err, &oe) {
			code = oe.Code
		}
		s.metrics.tokenErrors.WithLabelValues("par", code).Inc()
		s.writeOAuthError(w, r, err)
	}
}

func (s *Server) pushRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	form, err := readParams(w, r)
	if err != nil {
		return err
	}
	if err := checkDuplicates(form); err != nil {
		return err
	}
	// DPoP before client authentication, as at the token endpoint: a
	// client told to use_dpop_nonce can then resend the same assertion,
	// which authentication would otherwise have consumed.
	proof, err := s.checkDPoP(w, r, "") // nil, nil without a DPoP header
	if err != nil {
		return err
	}
	c, err := s.authenticateClient(r, form, PathPAR)
	if err != nil {
		return err
	}
	if form.Has("request_uri") {
		return ErrInvalidRequest.WithDescription("request_uri is not allowed in a pushed authorization request")
	}
	req, err := parseAuthorizeParams(form, c)
	if err != nil {
		return err
	}
	if proof != nil {
		if req.DPoPJKT != "" && req.DPoPJKT != proof.Thumbprint {
			return ErrInvalidDPoPProof.WithDescription("dpop_jkt does not match the key of the DPoP proof")
		}
		req.DPoPJKT = proof.Thumbprint
	}
	if c.DPoPBoundAccessTokens && req.DPoPJKT == "" {
		return ErrInvalidRequest.WithDescription("this client must bind the authorization code to its DPoP key: send a DPoP proof or dpop_jkt")
	}
	params, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode pushed request: %w", err)
	}
	random, now := newSecret(), s.now()
	if _, err := s.db.ExecContext(ctx, "INSERT INTO identity_par (request_hash, client_id, params, expires_at) VALUES (?, ?, ?, ?)",
		hashSecret(random), c.ID, string(params), now.Add(s.cfg.PARTTL).UnixMilli()); err != nil {
		return fmt.Errorf("store pushed request: %w", err)
	}
	s.setDPoPNonce(w)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(parResponse{RequestURI: parURNPrefix + random, ExpiresIn: int(s.cfg.PARTTL.Seconds())})
	return nil
}
