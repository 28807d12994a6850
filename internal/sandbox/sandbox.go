// Package sandbox is the local Stripe sandbox: the project's stateful Stripe
// fake served as a small program, with a tiny "dashboard" (an HTML page and
// a JSON API under /_sandbox/) to edit customers as a person would in
// Stripe's dashboard. Dashboard edits send signed webhooks without an
// idempotency key, like real dashboard edits, so the full loop can be
// watched offline.
package sandbox

import (
	"encoding/json"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// Config configures the sandbox.
type Config struct {
	APIKey        string // the secret key the fake accepts (STRIPE_SECRET_KEY of the worker)
	WebhookURL    string // where events are delivered (the webhook's /webhook/stripe)
	WebhookSecret string // signing secret (STRIPE_WEBHOOK_SECRET of the webhook)
	Logger        *slog.Logger
}

// Sandbox is the fake plus its dashboard.
type Sandbox struct {
	Fake *stripefake.Server
	mux  *http.ServeMux
}

// New builds a sandbox; serve Handler.
func New(cfg Config) *Sandbox {
	fake := stripefake.New(stripefake.Options{APIKey: cfg.APIKey, WebhookURL: cfg.WebhookURL,
		WebhookSecret: cfg.WebhookSecret, Logger: cfg.Logger})
	s := &Sandbox{Fake: fake, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /_sandbox/{$}", s.page)
	s.mux.HandleFunc("GET /_sandbox/customers", s.list)
	s.mux.HandleFunc("POST /_sandbox/customers", s.create)
	s.mux.HandleFunc("POST /_sandbox/customers/{id}", s.update)
	s.mux.HandleFunc("POST /_sandbox/customers/{id}/delete", s.delete)
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

func (s *Sandbox) list(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.customers())
}

// edit reads the fields a dashboard user changes, from a form or JSON.
type edit struct {
	Email, Name, Phone *string
}

func readEdit(r *http.Request) (edit, error) {
	var e edit
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var in map[string]string
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
			return e, err
		}
		for k, p := range map[string]**string{"email": &e.Email, "name": &e.Name, "phone": &e.Phone} {
			if v, ok := in[k]; ok {
				*p = &v
			}
		}
		return e, nil
	}
	if err := r.ParseForm(); err != nil {
		return e, err
	}
	for k, p := range map[string]**string{"email": &e.Email, "name": &e.Name, "phone": &e.Phone} {
		if _, ok := r.PostForm[k]; ok {
			v := r.PostForm.Get(k)
			*p = &v
		}
	}
	return e, nil
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
	e, err := readEdit(r)
	if err != nil {
		s.answer(w, r, nil, err)
		return
	}
	var c stripefake.Customer
	if e.Email != nil {
		c.Email = *e.Email
	}
	if e.Name != nil {
		c.Name = *e.Name
	}
	if e.Phone != nil {
		c.Phone = *e.Phone
	}
	out, err := s.Fake.DashboardCreate(c)
	s.answer(w, r, out, err)
}

func (s *Sandbox) update(w http.ResponseWriter, r *http.Request) {
	e, err := readEdit(r)
	if err != nil {
		s.answer(w, r, nil, err)
		return
	}
	out, err := s.Fake.DashboardUpdate(r.PathValue("id"), func(c *stripefake.Customer) {
		if e.Email != nil {
			c.Email = *e.Email
		}
		if e.Name != nil {
			c.Name = *e.Name
		}
		if e.Phone != nil {
			c.Phone = *e.Phone
		}
	})
	s.answer(w, r, out, err)
}

func (s *Sandbox) delete(w http.ResponseWriter, r *http.Request) {
	err := s.Fake.DashboardDelete(r.PathValue("id"))
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
