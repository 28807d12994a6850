// Package sandbox is the local Stripe sandbox: the project's stateful Stripe
// fake served as a small program, with a tiny "dashboard" (an HTML page and
// a JSON API under /_sandbox/) to edit customers as a person would in
// Stripe's dashboard. Dashboard edits send signed webhooks without an
// idempotency key, like real dashboard edits, so the full loop can be
// watched offline.
//
// The JSON API:
//
//	GET  /_sandbox/customers              every customer, newest first ("deleted": true once deleted)
//	POST /_sandbox/customers              create one, {email, name, phone} (JSON or a form; JSON may add description and metadata)
//	POST /_sandbox/customers/{id}         edit one, {email, name, phone}; absent fields are kept (JSON: also description, metadata)
//	POST /_sandbox/customers/{id}/delete  delete one
//
// With "silent": true in the JSON body (or ?silent=true on a delete) a
// create, edit or delete sends no event at all, and is not in /v1/events
// either: the customers of an account from before Tandem was connected, or
// drift no webhook reported (a lost delivery). Only reading the customers
// shows them, which is what tandemctl backfill and reconcile do. A create
// may then also give "created" (Unix seconds in the past). POST
// /_sandbox/customers also takes a JSON array of such objects and answers
// with the array of customers made, to seed an account in one call (they
// are made in order; the first one refused stops the rest and is named in
// the 400):
//
//	curl -s -H 'Content-Type: application/json' localhost:12111/_sandbox/customers \
//	  -d '[{"email":"old@example.com","name":"Old","silent":true}]'
//	POST /_sandbox/faults                 {rate_limit_ratio, server_error_ratio, latency, fail_after_write, expire_idempotency_keys, reject_email_domain}: API faults ({} turns them off)
//	POST /_sandbox/delivery               {duplicates, order (per_customer|shuffled|reversed), paused, drop (0-1: lose that share of deliveries)}: webhook delivery
//	GET  /_sandbox/stats                  API requests, events and webhook deliveries so far
//
// Every POST refuses cross-origin browser requests (403): another site's
// page cannot post a form to the dashboard.
package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// HistoryLimit is how many API requests, events (also served by
// /v1/events), idempotency keys and webhook delivery attempts the sandbox
// remembers by default (each; the oldest are forgotten first), so its
// memory stays flat under load. Config.Fake's Max* fields override it.
const HistoryLimit = 5000

// Config configures the sandbox.
type Config struct {
	APIKey        string // the secret key the fake accepts (STRIPE_SECRET_KEY of the worker)
	WebhookURL    string // where events are delivered (the webhook's /webhook/stripe)
	WebhookSecret string // signing secret (STRIPE_WEBHOOK_SECRET of the webhook)
	Logger        *slog.Logger
	// Fake holds the fake's other options (webhook retries and their
	// backoff, duplicate deliveries, delivery order, seed). The four fields
	// above replace its APIKey, WebhookURL, WebhookSecret and Logger.
	Fake stripefake.Options
}

// Sandbox is the fake plus its dashboard.
type Sandbox struct {
	Fake *stripefake.Server
	mux  *http.ServeMux
}

// New builds a sandbox; serve Handler.
func New(cfg Config) *Sandbox {
	opts := cfg.Fake
	opts.APIKey, opts.WebhookURL, opts.WebhookSecret, opts.Logger = cfg.APIKey, cfg.WebhookURL, cfg.WebhookSecret, cfg.Logger
	// A sandbox runs for hours under load: remember a bounded history.
	for _, bound := range []*int{&opts.MaxRequests, &opts.MaxEvents, &opts.MaxIdempotencyKeys, &opts.MaxDeliveryAttempts} {
		if *bound <= 0 {
			*bound = HistoryLimit
		}
	}
	fake := stripefake.New(opts)
	s := &Sandbox{Fake: fake, mux: http.NewServeMux()}
	// Any page a developer visits could post a form here and so edit a
	// customer, and through the webhook a Tandem user: browser requests
	// from another origin (Sec-Fetch-Site, or an Origin other than the
	// Host) are refused with a 403. Non-browser clients (curl, the tests)
	// send neither header and are served.
	csrf := http.NewCrossOriginProtection().Handler
	s.mux.HandleFunc("GET /_sandbox/{$}", s.page)
	s.mux.HandleFunc("GET /_sandbox/customers", s.list)
	s.mux.Handle("POST /_sandbox/customers", csrf(http.HandlerFunc(s.create)))
	s.mux.Handle("POST /_sandbox/customers/{id}", csrf(http.HandlerFunc(s.update)))
	s.mux.Handle("POST /_sandbox/customers/{id}/delete", csrf(http.HandlerFunc(s.delete)))
	s.mux.Handle("POST /_sandbox/faults", csrf(http.HandlerFunc(s.faults)))
	s.mux.Handle("POST /_sandbox/delivery", csrf(http.HandlerFunc(s.delivery)))
	s.mux.HandleFunc("GET /_sandbox/stats", s.stats)
	s.mux.Handle("/", fake.Handler())
	return s
}

// Handler serves Stripe's API (/v1/...) and the dashboard (/_sandbox/).
func (s *Sandbox) Handler() http.Handler { return s.mux }

// Close stops webhook delivery.
func (s *Sandbox) Close() { s.Fake.Close() }

func (s *Sandbox) customers() []stripefake.Customer {
	cs := s.Fake.Customers()
	slices.SortFunc(cs, func(a, b stripefake.Customer) int { return b.Created.Compare(a.Created) })
	return cs
}

// listed is a customer as the dashboard lists it: the Stripe customer
// object, plus "deleted": true once it is deleted (Stripe's API only returns
// a stub then).
type listed struct{ c stripefake.Customer }

func (l listed) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(l.c)
	if err != nil || !l.c.Deleted || len(b) < 2 {
		return b, err
	}
	return append(b[:len(b)-1], `,"deleted":true}`...), nil
}

func (s *Sandbox) list(w http.ResponseWriter, r *http.Request) {
	cs := s.customers()
	out := make([]listed, len(cs))
	for i, c := range cs {
		out[i] = listed{c}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// faultsJSON is the body of POST /_sandbox/faults: the share of API
// requests answered 429 and 500, and a latency added to the others ("200ms").
// The zero value (an empty object) turns faults off.
type faultsJSON struct {
	RateLimitRatio   float64 `json:"rate_limit_ratio"`
	ServerErrorRatio float64 `json:"server_error_ratio"`
	Latency          string  `json:"latency,omitempty"`
	// FailAfterWrite makes the next n writes answer 500 after they took
	// effect, the 500 saved under their idempotency key, as Stripe does.
	FailAfterWrite int `json:"fail_after_write,omitempty"`
	// ExpireIdempotencyKeys forgets every stored key now (Stripe: 24 h).
	ExpireIdempotencyKeys bool `json:"expire_idempotency_keys,omitempty"`
	// RejectEmailDomain answers 400 to creates and updates of customers
	// with an email at this domain: a permanent failure ("" turns it off).
	RejectEmailDomain string `json:"reject_email_domain,omitempty"`
}

// faults replaces the injected API faults (stripefake.Server.SetFaults), to
// watch Tandem's retries.
func (s *Sandbox) faults(w http.ResponseWriter, r *http.Request) {
	var in faultsJSON
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, "want JSON {rate_limit_ratio, server_error_ratio, latency}: "+err.Error(), http.StatusBadRequest)
		return
	}
	f := stripefake.Faults{RateLimitRatio: in.RateLimitRatio, ServerErrorRatio: in.ServerErrorRatio, RejectEmailDomain: in.RejectEmailDomain}
	if in.Latency != "" {
		d, err := time.ParseDuration(in.Latency)
		if err != nil || d < 0 {
			http.Error(w, "latency: want a duration such as 200ms", http.StatusBadRequest)
			return
		}
		f.Latency = d
	}
	if f.RateLimitRatio < 0 || f.ServerErrorRatio < 0 || f.RateLimitRatio+f.ServerErrorRatio > 1 {
		http.Error(w, "rate_limit_ratio and server_error_ratio: want shares from 0 to 1 that add up to at most 1", http.StatusBadRequest)
		return
	}
	if in.FailAfterWrite < 0 {
		http.Error(w, "fail_after_write: want 0 or more", http.StatusBadRequest)
		return
	}
	s.Fake.SetFaults(f)
	s.Fake.FailAfterWrite(in.FailAfterWrite)
	if in.ExpireIdempotencyKeys {
		s.Fake.ExpireIdempotencyKeys()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(in)
}

// deliveryJSON is the body of POST /_sandbox/delivery; absent fields are
// left as they are.
type deliveryJSON struct {
	Duplicates *int    `json:"duplicates,omitempty"` // extra copies of every event
	Order      *string `json:"order,omitempty"`      // per_customer, shuffled or reversed
	Paused     *bool   `json:"paused,omitempty"`     // hold deliveries (events keep queuing)
	// Drop loses the deliveries of this share of new events (0 to 1): they
	// are recorded and listed by GET /v1/events, never sent, as when an
	// endpoint is down for days. Tandem's catch-up finds them.
	Drop *float64 `json:"drop,omitempty"`
}

var orders = map[string]stripefake.DeliveryOrder{
	"per_customer": stripefake.OrderPerCustomer,
	"shuffled":     stripefake.OrderShuffled,
	"reversed":     stripefake.OrderReversed,
}

// delivery changes how webhooks are delivered from now on, to watch Tandem
// cope with duplicated, reordered or late events.
func (s *Sandbox) delivery(w http.ResponseWriter, r *http.Request) {
	var in deliveryJSON
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, "want JSON {duplicates, order, paused, drop}: "+err.Error(), http.StatusBadRequest)
		return
	}
	var order stripefake.DeliveryOrder
	if in.Order != nil {
		o, ok := orders[*in.Order]
		if !ok {
			http.Error(w, "order: want per_customer, shuffled or reversed", http.StatusBadRequest)
			return
		}
		order = o
	}
	if in.Duplicates != nil && *in.Duplicates < 0 {
		http.Error(w, "duplicates: want 0 or more", http.StatusBadRequest)
		return
	}
	if in.Drop != nil && (*in.Drop < 0 || *in.Drop > 1) {
		http.Error(w, "drop: want a share from 0 to 1", http.StatusBadRequest)
		return
	}
	if in.Duplicates != nil {
		s.Fake.SetDuplicateDeliveries(*in.Duplicates)
	}
	if in.Drop != nil {
		s.Fake.SetDropDeliveries(*in.Drop)
	}
	if in.Order != nil {
		s.Fake.SetDeliveryOrder(order)
	}
	if in.Paused != nil {
		if *in.Paused {
			s.Fake.PauseDelivery()
		} else {
			s.Fake.ResumeDelivery()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(in)
}

// stats reports what the sandbox has seen: API requests (writes are POST
// and DELETE) by outcome, events, and webhook deliveries. Counting writes
// before and after a dashboard edit shows that Tandem does not echo it back.
func (s *Sandbox) stats(w http.ResponseWriter, r *http.Request) {
	st := s.Fake.Stats()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"requests": map[string]int{
			"total": st.Requests, "writes": st.Writes, "customers_created": st.CustomersCreated, "idempotent_replays": st.IdempotentReplays,
			"injected_rate_limits": st.InjectedRateLimits, "injected_server_errors": st.InjectedServerErrors,
			"unauthorized": st.Unauthorized,
		},
		"events":     st.Events,
		"deliveries": s.Fake.DeliveryStats(),
	})
}

// edit reads the fields a dashboard user changes, from a form or JSON
// (JSON also: description, a field Tandem does not sync, and metadata).
type edit struct {
	Email, Name, Phone, Description *string
	Metadata                        map[string]string
	Silent                          bool  // send no event (JSON only)
	Created                         int64 // a silent create's time, Unix seconds (JSON only)
}

// apply writes e over c.
func (e edit) apply(c *stripefake.Customer) {
	for _, f := range []struct {
		from *string
		to   *string
	}{{e.Email, &c.Email}, {e.Name, &c.Name}, {e.Phone, &c.Phone}, {e.Description, &c.Description}} {
		if f.from != nil {
			*f.to = *f.from
		}
	}
	if e.Metadata != nil {
		if c.Metadata == nil {
			c.Metadata = map[string]string{}
		}
		for k, v := range e.Metadata {
			if v == "" {
				delete(c.Metadata, k)
			} else {
				c.Metadata[k] = v
			}
		}
	}
}

// jsonEdit is an edit as JSON.
type jsonEdit struct {
	Email       *string           `json:"email"`
	Name        *string           `json:"name"`
	Phone       *string           `json:"phone"`
	Description *string           `json:"description"`
	Metadata    map[string]string `json:"metadata"`
	Silent      bool              `json:"silent"`
	Created     int64             `json:"created"`
}

func (j jsonEdit) edit() edit {
	return edit{Email: j.Email, Name: j.Name, Phone: j.Phone, Description: j.Description, Metadata: j.Metadata,
		Silent: j.Silent, Created: j.Created}
}

func isJSON(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
}

// readEdits reads one edit, or with many a JSON array of them.
func readEdits(r *http.Request, many bool) ([]edit, bool, error) {
	if isJSON(r) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			return nil, false, err
		}
		if t := bytes.TrimSpace(body); many && len(t) > 0 && t[0] == '[' {
			var in []jsonEdit
			if err := json.Unmarshal(t, &in); err != nil {
				return nil, true, err
			}
			out := make([]edit, len(in))
			for i, j := range in {
				out[i] = j.edit()
			}
			return out, true, nil
		}
		var in jsonEdit
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, false, err
		}
		return []edit{in.edit()}, false, nil
	}
	var e edit
	if err := r.ParseForm(); err != nil {
		return nil, false, err
	}
	for k, p := range map[string]**string{"email": &e.Email, "name": &e.Name, "phone": &e.Phone} {
		if _, ok := r.PostForm[k]; ok {
			v := r.PostForm.Get(k)
			*p = &v
		}
	}
	return []edit{e}, false, nil
}

func readEdit(r *http.Request) (edit, error) {
	es, _, err := readEdits(r, false)
	if err != nil {
		return edit{}, err
	}
	return es[0], nil
}

func (s *Sandbox) answer(w http.ResponseWriter, r *http.Request, c any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c)
		return
	}
	http.Redirect(w, r, "/_sandbox/", http.StatusSeeOther)
}

func (s *Sandbox) create(w http.ResponseWriter, r *http.Request) {
	es, many, err := readEdits(r, true)
	if err != nil {
		s.answer(w, r, nil, err)
		return
	}
	made := make([]stripefake.Customer, 0, len(es))
	for i, e := range es {
		var c stripefake.Customer
		e.apply(&c)
		var out stripefake.Customer
		if e.Silent {
			if e.Created > 0 {
				c.Created = time.Unix(e.Created, 0).UTC()
			}
			out, err = s.Fake.SilentCreate(c)
		} else {
			out, err = s.Fake.DashboardCreate(c)
		}
		if err != nil {
			if many {
				err = fmt.Errorf("customer %d of %d (none after it made): %w", i+1, len(es), err)
			}
			s.answer(w, r, nil, err)
			return
		}
		made = append(made, out)
	}
	if many {
		s.answer(w, r, made, nil)
		return
	}
	s.answer(w, r, made[0], nil)
}

func (s *Sandbox) update(w http.ResponseWriter, r *http.Request) {
	e, err := readEdit(r)
	if err != nil {
		s.answer(w, r, nil, err)
		return
	}
	var out stripefake.Customer
	if e.Silent {
		out, err = s.Fake.SilentUpdate(r.PathValue("id"), e.apply)
	} else {
		out, err = s.Fake.DashboardUpdate(r.PathValue("id"), e.apply)
	}
	s.answer(w, r, out, err)
}

func (s *Sandbox) delete(w http.ResponseWriter, r *http.Request) {
	silent := r.URL.Query().Get("silent") == "true"
	if isJSON(r) {
		if e, err := readEdit(r); err == nil {
			silent = silent || e.Silent
		}
	}
	var err error
	if silent {
		err = s.Fake.SilentDelete(r.PathValue("id"))
	} else {
		err = s.Fake.DashboardDelete(r.PathValue("id"))
	}
	s.answer(w, r, map[string]any{"id": r.PathValue("id"), "deleted": err == nil}, err)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Tandem Stripe sandbox</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}
input{width:14em}.deleted{color:#999;text-decoration:line-through}</style></head>
<body><h1>Stripe sandbox</h1>
<p>A local stand-in for Stripe's dashboard. Edits here are sent to Tandem as signed <code>customer.*</code> webhooks.</p>
<table><tr><th>id</th><th>email</th><th>name</th><th>phone</th><th>tandem_user_id</th><th></th></tr>
{{range .}}<tr{{if .Deleted}} class="deleted"{{end}}><form method="post" action="/_sandbox/customers/{{.ID}}">
<td>{{.ID}}</td><td><input name="email" value="{{.Email}}"></td><td><input name="name" value="{{.Name}}"></td>
<td><input name="phone" value="{{.Phone}}"></td><td>{{index .Metadata "tandem_user_id"}}</td>
<td>{{if not .Deleted}}<button>save</button></form><form method="post" action="/_sandbox/customers/{{.ID}}/delete"><button>delete</button>{{end}}</form></td></tr>
{{else}}<tr><td colspan="6">no customers yet: create a user through Tandem's API</td></tr>{{end}}
</table>
<h2>New customer (made "in the dashboard")</h2>
<form method="post" action="/_sandbox/customers">email <input name="email"> name <input name="name"> phone <input name="phone"> <button>create</button></form>
</body></html>`))

func (s *Sandbox) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = pageTmpl.Execute(w, s.customers())
}
