// Package factory holds the only list of providers (STYLE habit 4): a
// Registry maps each provider's stable name to the Builder that makes its
// adapter from the provider's own settings. There is no init() registration;
// adding a provider is one line in New.
//
// A provider's name never changes: it is the queue suffix
// (tandem.sync.<name>), the webhook path segment (/webhook/<name>), the
// configuration prefix (<NAME>_…) and the provider column.
package factory

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/integrations/salesforce"
	"github.com/tandem-sync/tandem/internal/integrations/stripe"
)

// Deps are what a process hands every provider it builds; all are optional.
type Deps struct {
	// Logger is the process logger (adapters add provider=<name>); nil
	// discards.
	Logger *slog.Logger
	// HTTPClient sends the provider's requests; nil lets the adapter choose
	// (with a timeout).
	HTTPClient *http.Client
	// Registerer receives the adapter's own metrics; nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

// Builder makes one provider's adapter from its settings (the keys under its
// prefix, see config.Config.ProviderSettings). It returns an error naming the
// variable at fault when a setting is missing or invalid.
type Builder func(settings config.Settings, deps Deps) (integrations.Provider, error)

// Registry maps provider names to builders. It is not safe for concurrent
// Register; build it at start-up.
type Registry struct {
	builders map[string]Builder
}

// NewRegistry returns an empty registry; New returns the one with Tandem's
// providers.
func NewRegistry() *Registry {
	return &Registry{builders: map[string]Builder{}}
}

// New returns the registry of every provider Tandem ships. This is the list.
func New() *Registry {
	r := NewRegistry()
	r.Register(stripe.Name, buildStripe)
	r.Register(salesforce.Name, buildSalesforce)
	return r
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

// Register adds a provider. name must be lower-case letters and digits,
// starting with a letter (it becomes a queue name, a URL path segment and an
// environment prefix). It panics if name is invalid or already registered, or
// if b is nil: registrations are fixed at compile time, so these are
// programming errors.
func (r *Registry) Register(name string, b Builder) {
	if !validName.MatchString(name) {
		panic(fmt.Sprintf("factory: invalid provider name %q: want lower-case letters and digits", name))
	}
	if b == nil {
		panic(fmt.Sprintf("factory: nil builder for provider %q", name))
	}
	if _, dup := r.builders[name]; dup {
		panic(fmt.Sprintf("factory: provider %q registered twice", name))
	}
	r.builders[name] = b
}

// Names returns the registered provider names, sorted.
func (r *Registry) Names() []string {
	return slices.Sorted(maps.Keys(r.builders))
}

// Build makes the adapter of provider name from cfg's settings for it. It
// returns an error listing the known providers if name is unknown (`unknown
// provider "x" (known: stripe)`), the builder's error (naming the variable at
// fault) if its settings are missing or invalid, and an error if the adapter
// reports another name than the one it is registered under.
func (r *Registry) Build(name string, cfg *config.Config, deps Deps) (integrations.Provider, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	b, ok := r.builders[name]
	if !ok {
		return nil, fmt.Errorf("unknown provider %q (known: %s)", name, strings.Join(r.Names(), ", "))
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := b(cfg.ProviderSettings(name), deps)
	if err != nil {
		return nil, fmt.Errorf("building provider %s: %w", name, err)
	}
	if p.Name() != name {
		return nil, fmt.Errorf("building provider %s: the adapter calls itself %q", name, p.Name())
	}
	return p, nil
}

func buildStripe(s config.Settings, d Deps) (integrations.Provider, error) {
	cfg, err := stripe.ConfigFrom(s)
	if err != nil {
		return nil, err
	}
	return stripe.New(cfg, stripe.Options{Logger: d.Logger, HTTPClient: d.HTTPClient, Registerer: d.Registerer})
}

func buildSalesforce(s config.Settings, d Deps) (integrations.Provider, error) {
	a, err := salesforce.FromSettings(s, salesforce.Options{Logger: d.Logger, HTTPClient: d.HTTPClient, Registerer: d.Registerer})
	if err != nil {
		return nil, err
	}
	return a, nil
}
