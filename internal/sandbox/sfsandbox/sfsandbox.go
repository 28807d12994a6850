// Package sfsandbox is the local Salesforce sandbox: the project's stateful
// Salesforce fake (OAuth client credentials, the Contact REST resource, the
// SOQL query the catch-up sends, Outbound Messages) served as a small
// program, with a tiny "Salesforce UI" under /_sandbox/ to list, create,
// edit, merge and delete contacts as a person would. UI changes are made as
// the UI user, so Tandem applies them; Outbound Messages go to Tandem's
// /webhook/salesforce (none on delete, as in Salesforce: the catch-up finds
// deletions).
//
// The JSON API:
//
//	GET  /_sandbox/contacts               every contact, newest first (deleted ones too)
//	POST /_sandbox/contacts               create one, {first_name, last_name, email, phone} (JSON or a form)
//	POST /_sandbox/contacts/{id}          edit one; absent fields are kept
//	POST /_sandbox/contacts/{id}/delete   delete one (to the recycle bin)
//	POST /_sandbox/contacts/{id}/merge    {into: id}: merge it into another contact
//	POST /_sandbox/outbound               {paused, off}: hold Outbound Messages, or stop sending them
//
// Every POST refuses cross-origin browser requests (403).
package sfsandbox

import (
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/tandem-sync/tandem/internal/fakes/salesforcefake"
)

// Config configures the sandbox.
type Config struct {
	// OutboundURL is Tandem's /webhook/salesforce; OutboundToken its
	// ?token= (SALESFORCE_WEBHOOK_SECRET).
	OutboundURL, OutboundToken string
	// Fake holds the fake's other options; OutboundURL and OutboundToken
	// replace its own.
	Fake salesforcefake.Options
}

// Sandbox is the fake plus its UI.
type Sandbox struct {
	Fake *salesforcefake.Server
	mux  *http.ServeMux
	cfg  Config
}

// New builds a sandbox; serve Handler (Close when done).
func New(cfg Config) *Sandbox {
	opts := cfg.Fake
	opts.OutboundURL, opts.OutboundToken = cfg.OutboundURL, cfg.OutboundToken
	fake := salesforcefake.New(opts)
	s := &Sandbox{Fake: fake, mux: http.NewServeMux(), cfg: cfg}
	csrf := http.NewCrossOriginProtection().Handler
	s.mux.HandleFunc("GET /_sandbox/{$}", s.page)
	s.mux.HandleFunc("GET /_sandbox/contacts", s.list)
	s.mux.Handle("POST /_sandbox/contacts", csrf(http.HandlerFunc(s.create)))
	s.mux.Handle("POST /_sandbox/contacts/{id}", csrf(http.HandlerFunc(s.update)))
	s.mux.Handle("POST /_sandbox/contacts/{id}/delete", csrf(http.HandlerFunc(s.delete)))
	s.mux.Handle("POST /_sandbox/contacts/{id}/merge", csrf(http.HandlerFunc(s.merge)))
	s.mux.Handle("POST /_sandbox/outbound", csrf(http.HandlerFunc(s.outbound)))
	s.mux.Handle("/", fake.Handler())
	return s
}

// Handler serves the UI under /_sandbox/ and the fake everywhere else.
func (s *Sandbox) Handler() http.Handler { return s.mux }

// Close stops Outbound Message delivery.
func (s *Sandbox) Close() { s.Fake.Close() }

type contactJSON struct {
	ID           string `json:"id"`
	FirstName    string `json:"first_name"`
	LastName     string `json:"last_name"`
	Email        string `json:"email"`
	Phone        string `json:"phone"`
	TandemUserID string `json:"tandem_user_id,omitempty"`
	Deleted      bool   `json:"deleted"`
	MergedInto   string `json:"merged_into,omitempty"`
	Modified     string `json:"last_modified"`
}

func toJSON(c salesforcefake.Contact) contactJSON {
	return contactJSON{ID: c.ID, FirstName: c.FirstName, LastName: c.LastName, Email: c.Email, Phone: c.Phone,
		TandemUserID: c.TandemUserID, Deleted: c.IsDeleted, MergedInto: c.MasterRecordID,
		Modified: c.LastModifiedDate.UTC().Format("2006-01-02 15:04:05")}
}

func (s *Sandbox) contacts() []contactJSON {
	cs := s.Fake.Contacts()
	out := make([]contactJSON, 0, len(cs))
	for _, c := range slices.Backward(cs) {
		out = append(out, toJSON(c))
	}
	return out
}

func (s *Sandbox) list(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.contacts())
}

// edit reads the fields a person changes, from a form or JSON.
type edit struct {
	FirstName, LastName, Email, Phone *string
	Into                              string
}

func readEdit(r *http.Request) (edit, error) {
	var e edit
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var in struct {
			FirstName *string `json:"first_name"`
			LastName  *string `json:"last_name"`
			Email     *string `json:"email"`
			Phone     *string `json:"phone"`
			Into      string  `json:"into"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil && err != io.EOF {
			return e, err
		}
		return edit{FirstName: in.FirstName, LastName: in.LastName, Email: in.Email, Phone: in.Phone, Into: in.Into}, nil
	}
	if err := r.ParseForm(); err != nil {
		return e, err
	}
	field := func(name string) *string {
		if _, ok := r.PostForm[name]; !ok {
			return nil
		}
		v := strings.TrimSpace(r.PostForm.Get(name))
		return &v
	}
	return edit{FirstName: field("first_name"), LastName: field("last_name"), Email: field("email"), Phone: field("phone"),
		Into: strings.TrimSpace(r.PostForm.Get("into"))}, nil
}

func (e edit) apply(c *salesforcefake.Contact) {
	for _, f := range []struct {
		from *string
		to   *string
	}{{e.FirstName, &c.FirstName}, {e.LastName, &c.LastName}, {e.Email, &c.Email}, {e.Phone, &c.Phone}} {
		if f.from != nil {
			*f.to = *f.from
		}
	}
}

// answer writes the contact (or the error, 400) as JSON, or sends a form
// post back to the page.
func (s *Sandbox) answer(w http.ResponseWriter, r *http.Request, c salesforcefake.Contact, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		http.Redirect(w, r, "/_sandbox/", http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(toJSON(c))
}

func (s *Sandbox) create(w http.ResponseWriter, r *http.Request) {
	e, err := readEdit(r)
	if err != nil {
		http.Error(w, "want {first_name, last_name, email, phone}: "+err.Error(), http.StatusBadRequest)
		return
	}
	var c salesforcefake.Contact
	e.apply(&c)
	c, err = s.Fake.UICreate(c)
	s.answer(w, r, c, err)
}

func (s *Sandbox) update(w http.ResponseWriter, r *http.Request) {
	e, err := readEdit(r)
	if err != nil {
		http.Error(w, "want {first_name, last_name, email, phone}: "+err.Error(), http.StatusBadRequest)
		return
	}
	c, err := s.Fake.UIUpdate(r.PathValue("id"), e.apply)
	s.answer(w, r, c, err)
}

func (s *Sandbox) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.Fake.UIDelete(id)
	c, _ := s.Fake.Contact(id)
	s.answer(w, r, c, err)
}

func (s *Sandbox) merge(w http.ResponseWriter, r *http.Request) {
	e, err := readEdit(r)
	if err != nil || e.Into == "" {
		http.Error(w, "want {into: the id of the contact to keep}", http.StatusBadRequest)
		return
	}
	c, err := s.Fake.UIMerge(e.Into, r.PathValue("id"), nil)
	s.answer(w, r, c, err)
}

// outbound holds (paused) or stops (off: nothing is queued, as when the
// Outbound Message is deactivated) Outbound Messages; absent fields are
// left as they are.
func (s *Sandbox) outbound(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Paused *bool `json:"paused"`
		Off    *bool `json:"off"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, "want JSON {paused, off}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if in.Paused != nil {
		if *in.Paused {
			s.Fake.PauseDelivery()
		} else {
			s.Fake.ResumeDelivery()
		}
	}
	if in.Off != nil {
		if *in.Off {
			s.Fake.SetOutboundEndpoint("", "")
		} else {
			s.Fake.SetOutboundEndpoint(s.cfg.OutboundURL, s.cfg.OutboundToken)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(in)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Salesforce sandbox</title>
<style>body{font:14px sans-serif;margin:2em}td,th{padding:.3em .6em;text-align:left}tr.deleted{color:#999}input{width:9em}</style>
</head><body>
<h1>Salesforce sandbox</h1>
<p>Contacts as a person sees them in Salesforce. Changes here are made as the UI user: Outbound Messages bring
them to Tandem (none on delete: Tandem's catch-up finds deletions).</p>
<form method="post" action="/_sandbox/contacts">
<input name="first_name" placeholder="first name"> <input name="last_name" placeholder="last name" required>
<input name="email" placeholder="email"> <input name="phone" placeholder="phone"> <button>Create</button></form>
<table><tr><th>id</th><th>first name</th><th>last name</th><th>email</th><th>phone</th><th>Tandem user</th><th>modified</th><th></th></tr>
{{range .}}<tr{{if .Deleted}} class="deleted"{{end}}>
<td>{{.ID}}</td>
{{if .Deleted}}<td>{{.FirstName}}</td><td>{{.LastName}}</td><td>{{.Email}}</td><td>{{.Phone}}</td><td>{{.TandemUserID}}</td><td>{{.Modified}}</td>
<td>deleted{{if .MergedInto}} (merged into {{.MergedInto}}){{end}}</td>
{{else}}<td><input form="f-{{.ID}}" name="first_name" value="{{.FirstName}}"></td><td><input form="f-{{.ID}}" name="last_name" value="{{.LastName}}"></td>
<td><input form="f-{{.ID}}" name="email" value="{{.Email}}"></td><td><input form="f-{{.ID}}" name="phone" value="{{.Phone}}"></td>
<td>{{.TandemUserID}}</td><td>{{.Modified}}</td>
<td><form id="f-{{.ID}}" method="post" action="/_sandbox/contacts/{{.ID}}" style="display:inline"><button>Save</button></form>
<form method="post" action="/_sandbox/contacts/{{.ID}}/delete" style="display:inline"><button>Delete</button></form>
<form method="post" action="/_sandbox/contacts/{{.ID}}/merge" style="display:inline"><input name="into" placeholder="merge into id"><button>Merge</button></form></td>
{{end}}</tr>
{{end}}</table></body></html>`))

func (s *Sandbox) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = pageTmpl.Execute(w, s.contacts())
}
