// Package config loads Tandem's settings: documented defaults from
// configs/tandem.yaml (or the file TANDEM_CONFIG names), overridden by
// environment variables.
//
// Core settings use the TANDEM_ prefix (TANDEM_MYSQL_DSN → mysql_dsn). Each
// provider reads its own prefixed keys (STRIPE_SECRET_KEY → stripe.secret_key)
// through ProviderSettings, so adding a provider changes neither this package nor
// cmd/. Every error names the variable at fault, in one line.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// DefaultFile is the configuration file read when TANDEM_CONFIG is unset. A
// missing default file is not an error (built-in defaults apply); a missing
// file named by TANDEM_CONFIG is.
const DefaultFile = "configs/tandem.yaml"

// Config is the core configuration shared by every process.
type Config struct {
	MySQLDSN    string          // TANDEM_MYSQL_DSN: go-sql-driver DSN
	AMQPURL     string          // TANDEM_AMQP_URL: RabbitMQ URL; the vhost isolates a deployment
	APIAddr     string          // TANDEM_API_ADDR
	WebhookAddr string          // TANDEM_WEBHOOK_ADDR
	WorkerAddr  string          // TANDEM_WORKER_ADDR
	APITokens   []string        // TANDEM_API_TOKENS: bearer tokens the API accepts
	Providers   []string        // TANDEM_PROVIDERS: enabled providers
	Provider    string          // TANDEM_PROVIDER: the provider one worker serves
	MaxAttempts int             // TANDEM_MAX_ATTEMPTS: deliveries before dead-lettering
	RetryTiers  []time.Duration // TANDEM_RETRY_TIERS: delays of the retry queues, shortest first
	LogLevel    string          // TANDEM_LOG_LEVEL: debug, info, warn, error
	Relay       RelayConfig     // TANDEM_RELAY_*
	Worker      WorkerConfig    // TANDEM_WORKER_*
	Inbound     InboundConfig   // TANDEM_INBOUND_*
	Shutdown    time.Duration   // TANDEM_SHUTDOWN_TIMEOUT: drain deadline on SIGTERM
	HTTP        HTTPConfig      // TANDEM_HTTP_*
	// InboundCreate is TANDEM_INBOUND_CREATE: make users of unknown remote
	// objects (a customer made in the dashboard, a Checkout guest).
	InboundCreate bool
	// LinkByEmail is TANDEM_LINK_BY_EMAIL: before creating a remote
	// object, link the single live untagged one with the user's email.
	LinkByEmail bool
	// Pprof is TANDEM_PPROF: serve net/http/pprof under /debug/pprof/ on
	// the process's operations port (off by default: no token guards it).
	Pprof bool
	// CatchupInterval is TANDEM_CATCHUP_INTERVAL: how often cmd/webhook
	// reads the providers' own change logs (package catchup); 0 turns
	// catch-up off.
	CatchupInterval time.Duration
	// History is TANDEM_HISTORY: record each user's history (changes,
	// pushes, inbound events) for GET /v1/users/{id}/history and the
	// console; HistoryRetention (TANDEM_HISTORY_RETENTION) is how long the
	// api keeps it.
	History          bool
	HistoryRetention time.Duration

	k *koanf.Koanf
}

// RelayConfig tunes the outbox relay that runs inside cmd/api.
type RelayConfig struct {
	BatchSize    int           // TANDEM_RELAY_BATCH_SIZE: rows claimed per transaction
	PollInterval time.Duration // TANDEM_RELAY_POLL_INTERVAL: poll for rows written by other replicas
	Retention    time.Duration // TANDEM_RELAY_RETENTION: keep published rows this long
}

// HTTPConfig caps the connections of the api's and the webhook's HTTP
// servers.
type HTTPConfig struct {
	MaxConns      int // TANDEM_HTTP_MAX_CONNS: connections served at once
	MaxConnsPerIP int // TANDEM_HTTP_MAX_CONNS_PER_IP: connections one address may hold; 0: no limit (behind a proxy)
}

// WorkerConfig tunes a provider worker.
type WorkerConfig struct {
	Prefetch    int // TANDEM_WORKER_PREFETCH: unacked messages RabbitMQ hands one worker
	Concurrency int // TANDEM_WORKER_CONCURRENCY: messages processed at once
	// Lease is TANDEM_WORKER_LEASE: how long a worker may hold a user while
	// it pushes; a worker that dies holding it delays that user this long.
	Lease time.Duration
}

// MinInboundRetention is the shortest TANDEM_INBOUND_RETENTION accepted:
// Stripe retries a webhook for up to 3 days, and an event whose record is
// pruned is no longer recognised as a duplicate.
const MinInboundRetention = 72 * time.Hour

// InboundConfig says how long cmd/webhook keeps inbound_events.
type InboundConfig struct {
	Retention        time.Duration // TANDEM_INBOUND_RETENTION: keep rows (the de-duplication record) this long; at least MinInboundRetention
	PayloadRetention time.Duration // TANDEM_INBOUND_PAYLOAD_RETENTION: keep the payloads of conflict and invalid events this long
}

// Defaults are the built-in values, the same as the shipped configs/tandem.yaml
// except for api_tokens, which has no built-in default.
var defaults = map[string]any{
	"mysql_dsn":              "root@tcp(127.0.0.1:3306)/tandem?parseTime=true",
	"amqp_url":               "amqp://guest:guest@127.0.0.1:5672/",
	"api_addr":               ":8080",
	"webhook_addr":           ":8081",
	"worker_addr":            ":8082",
	"api_tokens":             "",
	"providers":              "stripe",
	"inbound_create":         "true",
	"link_by_email":          "true",
	"pprof":                  "false",
	"catchup_interval":       "1m",
	"provider":               "",
	"max_attempts":           "10",
	"retry_tiers":            "1s,10s,1m,10m",
	"log_level":              "info",
	"relay_batch_size":       "200",
	"relay_poll_interval":    "500ms",
	"relay_retention":        "24h",
	"shutdown_timeout":       "20s",
	"http_max_conns":         "1024",
	"http_max_conns_per_ip":  "128",
	"worker_prefetch":        "64",
	"worker_concurrency":     "32",
	"worker_lease":           "30s",
	"stripe.rate_limit":      "25",
	"stripe.api_base":        "",
	"salesforce.api_version": "v60.0",

	// Users' history (README "Operating Tandem"): recorded by every
	// process, pruned by cmd/api.
	"history":           "true",
	"history_retention": "168h",

	// cmd/webhook's retention of inbound_events (README "Storage").
	"inbound_retention":         "96h",
	"inbound_payload_retention": "72h",
}

// Load reads the configuration. environ is the process environment in
// os.Environ form; providers lists the provider names whose prefixed
// variables (NAME_KEY) are read.
func Load(environ []string, providers []string) (*Config, error) {
	k := koanf.New(".")
	for key, v := range defaults {
		_ = k.Set(key, v)
	}
	env := map[string]string{}
	for _, kv := range environ {
		if i := strings.IndexByte(kv, '='); i > 0 {
			env[kv[:i]] = kv[i+1:]
		}
	}
	path, named := env["TANDEM_CONFIG"]
	if !named {
		path = DefaultFile
	}
	if path != "" {
		if _, err := os.Stat(path); err == nil || named {
			fk := koanf.New(".")
			if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
				return nil, fmt.Errorf("config: TANDEM_CONFIG %q: %v", path, oneLine(err))
			}
			for _, key := range fk.Keys() {
				_ = k.Set(key, stringify(fk.Get(key)))
			}
		}
	}
	prefixes := map[string]string{"TANDEM_": ""}
	for _, p := range providers {
		prefixes[strings.ToUpper(p)+"_"] = strings.ToLower(p) + "."
	}
	for name, v := range env {
		for prefix, keyPrefix := range prefixes {
			if strings.HasPrefix(name, prefix) && len(name) > len(prefix) {
				_ = k.Set(keyPrefix+strings.ToLower(strings.TrimPrefix(name, prefix)), v)
			}
		}
	}

	c := &Config{k: k}
	var errs []error
	c.MySQLDSN = k.String("mysql_dsn")
	c.AMQPURL = k.String("amqp_url")
	c.APIAddr = k.String("api_addr")
	c.WebhookAddr = k.String("webhook_addr")
	c.WorkerAddr = k.String("worker_addr")
	c.APITokens = splitList(k.String("api_tokens"))
	c.Providers = splitList(strings.ToLower(k.String("providers")))
	c.InboundCreate = c.boolean("inbound_create", &errs)
	c.LinkByEmail = c.boolean("link_by_email", &errs)
	c.Pprof = c.boolean("pprof", &errs)
	c.History = c.boolean("history", &errs)
	c.HistoryRetention = c.duration("history_retention", &errs)
	c.Provider = strings.ToLower(strings.TrimSpace(k.String("provider")))
	c.LogLevel = strings.ToLower(k.String("log_level"))
	c.MaxAttempts = c.positiveInt("max_attempts", &errs)
	c.RetryTiers = c.durations("retry_tiers", &errs)
	c.Relay.BatchSize = c.positiveInt("relay_batch_size", &errs)
	c.Relay.PollInterval = c.duration("relay_poll_interval", &errs)
	c.Relay.Retention = c.duration("relay_retention", &errs)
	c.Inbound.Retention = c.duration("inbound_retention", &errs)
	c.Inbound.PayloadRetention = c.duration("inbound_payload_retention", &errs)
	if c.Inbound.Retention > 0 && c.Inbound.Retention < MinInboundRetention {
		errs = append(errs, fmt.Errorf("config: TANDEM_INBOUND_RETENTION %s: want at least %s (Stripe retries a webhook for 3 days; a pruned event is no longer a duplicate)",
			c.Inbound.Retention, MinInboundRetention))
	}
	c.Shutdown = c.duration("shutdown_timeout", &errs)
	if v := strings.TrimSpace(k.String("catchup_interval")); v != "0" {
		c.CatchupInterval = c.duration("catchup_interval", &errs)
	}
	c.Worker.Prefetch = c.positiveInt("worker_prefetch", &errs)
	c.Worker.Concurrency = c.positiveInt("worker_concurrency", &errs)
	c.Worker.Lease = c.duration("worker_lease", &errs)
	if c.Worker.Lease > 0 && c.Worker.Lease < 2*time.Second {
		errs = append(errs, fmt.Errorf("config: TANDEM_WORKER_LEASE %s: want at least 2s", c.Worker.Lease))
	}
	c.HTTP.MaxConns = c.positiveInt("http_max_conns", &errs)
	if v := strings.TrimSpace(k.String("http_max_conns_per_ip")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("config: %s %q: want 0 (no limit) or a positive integer", EnvName("http_max_conns_per_ip"), v))
		}
		c.HTTP.MaxConnsPerIP = n
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("config: TANDEM_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel))
	}
	for _, key := range []string{"mysql_dsn", "amqp_url"} {
		if strings.TrimSpace(k.String(key)) == "" {
			errs = append(errs, fmt.Errorf("config: %s is required", EnvName(key)))
		}
	}
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return c, nil
}

// RequireProvider returns the provider a worker serves: flag if set, else
// TANDEM_PROVIDER; it must be one of known.
func (c *Config) RequireProvider(flag string, known []string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(flag))
	if p == "" {
		p = c.Provider
	}
	if p == "" {
		return "", fmt.Errorf("config: TANDEM_PROVIDER (or -provider) is required: one of %s", strings.Join(known, ", "))
	}
	for _, k := range known {
		if k == p {
			return p, nil
		}
	}
	return "", fmt.Errorf("config: TANDEM_PROVIDER %q: unknown provider (known: %s)", p, strings.Join(known, ", "))
}

// MinAPITokenLen is the shortest bearer token TANDEM_API_TOKENS may hold:
// a guessable token (the published dev-token) is refused.
const MinAPITokenLen = 16

// RequireAPITokens reports a missing TANDEM_API_TOKENS (the api cannot start
// without one) or a token shorter than MinAPITokenLen, naming its position
// in the list but never the token.
func (c *Config) RequireAPITokens() error {
	if len(c.APITokens) == 0 {
		return errors.New("config: TANDEM_API_TOKENS is required (comma-separated bearer tokens)")
	}
	for i, t := range c.APITokens {
		if len(t) < MinAPITokenLen {
			return fmt.Errorf("config: TANDEM_API_TOKENS: token %d of %d is %d characters long: want at least %d characters (e.g. openssl rand -hex 24)",
				i+1, len(c.APITokens), len(t), MinAPITokenLen)
		}
	}
	return nil
}

// ProviderSettings returns the settings of one provider: the keys under its prefix,
// lower-case without the prefix (STRIPE_SECRET_KEY → "secret_key").
func (c *Config) ProviderSettings(name string) Settings {
	name = strings.ToLower(name)
	s := Settings{prefix: strings.ToUpper(name) + "_", values: map[string]string{}}
	for key, v := range c.k.Cut(name).All() {
		s.values[key] = stringify(v)
	}
	return s
}

// Settings are one provider's configuration values.
type Settings struct {
	prefix string
	values map[string]string
}

// NewSettings builds Settings by hand (tests, examples).
func NewSettings(provider string, values map[string]string) Settings {
	return Settings{prefix: strings.ToUpper(provider) + "_", values: values}
}

// String returns the value of key ("" if unset).
func (s Settings) String(key string) string { return strings.TrimSpace(s.values[key]) }

// Required returns the value of key or an error naming its variable.
func (s Settings) Required(key string) (string, error) {
	v := s.String(key)
	if v == "" {
		return "", fmt.Errorf("config: %s is required", s.Var(key))
	}
	return v, nil
}

// Float returns key as a float64, def when unset, or an error naming the variable.
func (s Settings) Float(key string, def float64) (float64, error) {
	v := s.String(key)
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("config: %s %q: want a non-negative number", s.Var(key), v)
	}
	return f, nil
}

// Var is the environment variable that sets key.
func (s Settings) Var(key string) string { return s.prefix + strings.ToUpper(key) }

// EnvName is the TANDEM_ variable that sets a core key.
func EnvName(key string) string { return "TANDEM_" + strings.ToUpper(key) }

func (c *Config) positiveInt(key string, errs *[]error) int {
	v := strings.TrimSpace(c.k.String(key))
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		*errs = append(*errs, fmt.Errorf("config: %s %q: want a positive integer", EnvName(key), v))
		return 0
	}
	return n
}

func (c *Config) boolean(key string, errs *[]error) bool {
	v := strings.TrimSpace(c.k.String(key))
	b, err := strconv.ParseBool(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("config: %s %q: want true or false", EnvName(key), v))
	}
	return b
}

func (c *Config) duration(key string, errs *[]error) time.Duration {
	v := strings.TrimSpace(c.k.String(key))
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("config: %s %q: want a positive duration such as 500ms or 24h", EnvName(key), v))
		return 0
	}
	return d
}

func (c *Config) durations(key string, errs *[]error) []time.Duration {
	v := c.k.String(key)
	var out []time.Duration
	prev := time.Duration(0)
	for _, part := range splitList(v) {
		d, err := time.ParseDuration(part)
		if err != nil || d < time.Millisecond || d <= prev {
			*errs = append(*errs, fmt.Errorf("config: %s %q: want increasing durations such as 1s,10s,1m,10m", EnvName(key), v))
			return nil
		}
		out = append(out, d)
		prev = d
	}
	if len(out) == 0 {
		*errs = append(*errs, fmt.Errorf("config: %s is empty: want durations such as 1s,10s,1m,10m", EnvName(key)))
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = stringify(e)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(x)
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
