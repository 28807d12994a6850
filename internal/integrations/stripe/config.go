package stripe

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/tandem-sync/tandem/internal/config"
)

// DefaultRateLimit is STRIPE_RATE_LIMIT's default: Stripe's test-mode limit of
// 25 requests per second.
const DefaultRateLimit = 25

// Config is the Stripe adapter's configuration, read from the STRIPE_
// settings (DESIGN §2).
type Config struct {
	// SecretKey is the API key (sk_test_…, sk_live_… or a restricted rk_…
	// key that may write customers). STRIPE_SECRET_KEY; required.
	SecretKey string

	// APIBase is the API's base URL, for stripe-mock or a test fake (e.g.
	// http://127.0.0.1:12111). STRIPE_API_BASE; empty means Stripe's own.
	APIBase string

	// RateLimit is the number of requests per second this process sends at
	// most. STRIPE_RATE_LIMIT; default DefaultRateLimit.
	RateLimit float64

	// WebhookSecret is the signing secret of the webhook endpoint
	// (whsec_…). STRIPE_WEBHOOK_SECRET; required by the webhook process
	// only (see Adapter.CheckWebhookConfig), so Validate does not ask for it.
	WebhookSecret string

	// AcceptAPIVersionMismatch makes the webhook accept events rendered in
	// another API version than the one stripe-go v76 speaks
	// (stripego.APIVersion, 2023-10-16), which it rejects otherwise.
	// STRIPE_ACCEPT_API_VERSION_MISMATCH; default false. Pin the endpoint to
	// that version instead when you can.
	AcceptAPIVersionMismatch bool
}

// ConfigFrom reads the adapter's settings (config.Config.ProviderSettings
// ("stripe")) and validates them. Every error names the variable at fault.
func ConfigFrom(s config.Settings) (Config, error) {
	key, err := s.Required("secret_key")
	if err != nil {
		return Config{}, err
	}
	limit, err := s.Float("rate_limit", DefaultRateLimit)
	if err != nil {
		return Config{}, err
	}
	accept := false
	if v := s.String("accept_api_version_mismatch"); v != "" {
		if accept, err = strconv.ParseBool(v); err != nil {
			return Config{}, fmt.Errorf("config: %s %q: want true or false", s.Var("accept_api_version_mismatch"), v)
		}
	}
	c := Config{SecretKey: key, APIBase: s.String("api_base"), RateLimit: limit,
		WebhookSecret: s.String("webhook_secret"), AcceptAPIVersionMismatch: accept}
	return c, c.Validate()
}

// Validate reports the first invalid field, naming its variable.
func (c Config) Validate() error {
	if c.SecretKey == "" {
		return errors.New("config: STRIPE_SECRET_KEY is required")
	}
	if c.APIBase != "" {
		u, err := url.Parse(c.APIBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: STRIPE_API_BASE %q: want an absolute http(s) URL such as http://127.0.0.1:12111", config.RedactURL(c.APIBase))
		}
	}
	if !(c.RateLimit > 0) {
		return fmt.Errorf("config: STRIPE_RATE_LIMIT %v: want a positive number of requests per second", c.RateLimit)
	}
	return nil
}
