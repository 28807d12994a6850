package salesforce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tandem-sync/tandem/internal/integrations"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// tokens caches the access token of the client credentials flow.
// Salesforce's token answer has no expires_in (a session lasts until it
// times out or is revoked), so the token is kept until the API answers 401
// and the caller invalidates it.
type tokens struct {
	cfg      clientcredentials.Config
	client   *http.Client
	logger   *slog.Logger
	requests prometheus.Counter

	fetch chan struct{} // one fetch at a time

	mu      sync.Mutex
	current string
}

func newTokens(cfg Config, client *http.Client, logger *slog.Logger, requests prometheus.Counter) *tokens {
	return &tokens{
		cfg: clientcredentials.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			TokenURL:     cfg.TokenURL,
			AuthStyle:    oauth2.AuthStyleInParams,
		},
		client:   client,
		logger:   logger,
		requests: requests,
		fetch:    make(chan struct{}, 1),
	}
}

func (t *tokens) cached() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// get returns the cached token, or fetches one. Concurrent callers share one
// fetch. Errors: ctx's, transient (network, 5xx of the token endpoint) or
// permanent (the endpoint refused the credentials: 4xx).
func (t *tokens) get(ctx context.Context) (string, error) {
	if tok := t.cached(); tok != "" {
		return tok, nil
	}
	select {
	case t.fetch <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("salesforce: waiting for an access token: %w", ctx.Err())
	}
	defer func() { <-t.fetch }()
	if tok := t.cached(); tok != "" {
		return tok, nil // fetched while we waited
	}
	t.requests.Inc()
	tok, err := t.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, t.client))
	if err != nil {
		return "", t.classify(err)
	}
	if tok.AccessToken == "" {
		return "", fmt.Errorf("salesforce: token endpoint %s answered without an access token", t.cfg.TokenURL)
	}
	t.logger.DebugContext(ctx, "fetched an access token", "token_url", t.cfg.TokenURL,
		"instance_url", tok.Extra("instance_url"))
	t.mu.Lock()
	t.current = tok.AccessToken
	t.mu.Unlock()
	return tok.AccessToken, nil
}

// invalidate forgets tok if it is still the cached token (another caller may
// have replaced it already).
func (t *tokens) invalidate(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == tok {
		t.current = ""
	}
}

// classify translates a token endpoint error: a 4xx answer (invalid_client,
// invalid_grant: the credentials or the connected app are wrong) is
// permanent; 429, 5xx and failures to get an answer are transient.
func (t *tokens) classify(err error) error {
	err = fmt.Errorf("salesforce: fetching an access token from %s: %w", t.cfg.TokenURL, err)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		if s := re.Response.StatusCode; s >= 400 && s < 500 && s != http.StatusTooManyRequests {
			return integrations.Permanent(err)
		}
	}
	return err
}
