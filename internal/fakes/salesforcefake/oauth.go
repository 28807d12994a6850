package salesforcefake

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
)

const tokenPath = "/services/oauth2/token"

// oauthError is the body of an error answer of the token endpoint.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func tokenError(status int, code, description string) response {
	r := jsonResponse(status, oauthError{Error: code, Description: description})
	r.code = code
	return r
}

// serveToken implements the client credentials flow: POST grant_type=
// client_credentials with the client id and secret in the body or in a
// Basic Authorization header.
func (s *Server) serveToken(r *http.Request, body []byte) response {
	if r.Method != http.MethodPost {
		return tokenError(http.StatusBadRequest, "invalid_request", "must use HTTP POST")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return tokenError(http.StatusBadRequest, "invalid_request", "invalid form body")
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return tokenError(http.StatusBadRequest, "invalid_request", "grant type is missing")
	default:
		return tokenError(http.StatusBadRequest, "unsupported_grant_type", "grant type not supported")
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: form-encoded before base64.
		if u, err := url.QueryUnescape(id); err == nil {
			id = u
		}
		if u, err := url.QueryUnescape(secret); err == nil {
			secret = u
		}
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(s.opts.ClientID)) != 1 {
		return tokenError(http.StatusBadRequest, "invalid_client_id", "client identifier invalid")
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
		return tokenError(http.StatusBadRequest, "invalid_client", "invalid client credentials")
	}

	token := s.opts.OrgID[:15] + "!" + randomToken()
	issuedAt := strconv.FormatInt(s.now().UnixMilli(), 10)
	identity := "https://login.salesforce.com/id/" + s.opts.OrgID + "/" + s.opts.IntegrationUserID
	mac := hmac.New(sha256.New, []byte(s.opts.ClientSecret))
	mac.Write([]byte(identity + issuedAt))
	instance := s.URL()
	if instance == "" {
		instance = "http://" + r.Host
	}

	s.mu.Lock()
	s.tokens[token] = true
	s.stats.TokensIssued++
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, map[string]string{
		"access_token": token,
		"signature":    base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		"scope":        "api",
		"instance_url": instance,
		"id":           identity,
		"token_type":   "Bearer",
		"issued_at":    issuedAt,
	})
}

func randomToken() string {
	b := make([]byte, 48)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// RevokeTokens invalidates every access token issued so far, as when
// sessions expire or an admin revokes them: the next API call with one of
// them gets 401 INVALID_SESSION_ID. New tokens work.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.tokens {
		s.tokens[t] = false
	}
}

// RefuseSessions, while on, answers every API request 401
// INVALID_SESSION_ID whatever its token, newly issued ones included (as when
// the integration user lost API access): a client that renews its token on
// 401 gets 401 again. The token endpoint keeps issuing tokens.
func (s *Server) RefuseSessions(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = on
}

// TokensIssued returns how many access tokens the token endpoint issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.TokensIssued
}

// IssueToken returns a new valid access token without a request, for tests
// that talk to the API directly.
func (s *Server) IssueToken() string {
	token := s.opts.OrgID[:15] + "!" + randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = true
	return token
}
