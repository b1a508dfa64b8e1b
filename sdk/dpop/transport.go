package dpop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// maxErrorBody bounds how much of a 400 response Transport reads to look
// for the use_dpop_nonce error.
const maxErrorBody = 64 << 10

// Transport is an http.RoundTripper that adds a DPoP proof to every
// request. It remembers the DPoP-Nonce each server last sent and puts it in
// later proofs; when a server answers 400 or 401 with the error
// use_dpop_nonce and a fresh nonce, it retries the request once with that
// nonce (requests with a body are retried only if the body can be re-read,
// as for http.NewRequest with a bytes or strings reader).
//
// When the request carries "Authorization: DPoP <token>", or AccessToken is
// set, the proof is bound to that token (ath).
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Signer makes the proofs (required).
	Signer *Signer
	// AccessToken, when set, returns the access token to send: Transport
	// then sets "Authorization: DPoP <token>" on every request.
	AccessToken func(ctx context.Context) (string, error)

	mu     sync.Mutex
	nonces map[string]string // origin → latest DPoP-Nonce
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Signer == nil {
		closeBody(req)
		return nil, errors.New("dpop: transport has no signer")
	}
	token := ""
	if t.AccessToken != nil {
		tok, err := t.AccessToken(req.Context())
		if err != nil {
			closeBody(req)
			return nil, fmt.Errorf("dpop: access token: %w", err)
		}
		token = tok
	} else if scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "DPoP") {
		token = tok
	}
	origin := req.URL.Scheme + "://" + strings.ToLower(req.URL.Host)
	resp, err := t.send(req, origin, token)
	if err != nil {
		return nil, err
	}
	if !t.askedForNonce(resp) || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return resp, nil
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil // the first answer stands
		}
		retry.Body = body
	}
	drain(resp)
	return t.send(retry, origin, token)
}

// send signs and sends one attempt of req, remembering any nonce the
// server returns.
func (t *Transport) send(req *http.Request, origin, token string) (*http.Response, error) {
	t.mu.Lock()
	nonce := t.nonces[origin]
	t.mu.Unlock()
	proof, err := t.Signer.Proof(req.Method, req.URL.String(), nonce, token)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	out := req.Clone(req.Context())
	out.Header.Set("DPoP", proof)
	if t.AccessToken != nil {
		out.Header.Set("Authorization", "DPoP "+token)
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" {
		t.mu.Lock()
		if t.nonces == nil {
			t.nonces = map[string]string{}
		}
		t.nonces[origin] = n
		t.mu.Unlock()
	}
	return resp, nil
}

// askedForNonce reports whether resp is a use_dpop_nonce error that came
// with a nonce. For a 400 it reads the body, and replaces it so that the
// caller still sees it.
func (t *Transport) askedForNonce(resp *http.Response) bool {
	if resp.Header.Get("DPoP-Nonce") == "" {
		return false
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		for _, v := range resp.Header.Values("WWW-Authenticate") {
			if strings.Contains(v, `error="use_dpop_nonce"`) {
				return true
			}
		}
		return false
	case http.StatusBadRequest:
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		if err != nil {
			return false
		}
		var e struct {
			Error string `json:"error"`
		}
		return json.Unmarshal(body, &e) == nil && e.Error == "use_dpop_nonce"
	}
	return false
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
