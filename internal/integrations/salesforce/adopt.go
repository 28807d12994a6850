package salesforce

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// QueryBatchSize is how many contacts one page of a SOQL query returns (the
// Sforce-Query-Options batchSize Tandem asks for; Salesforce's largest).
const QueryBatchSize = 2000

// maxQueryAnswerBytes bounds one page of query results (2,000 contacts,
// each with a metadata field of up to 128 KiB in the worst case).
const maxQueryAnswerBytes = 64 << 20

var (
	_ integrations.Lister  = (*Adapter)(nil)
	_ integrations.Matcher = (*Adapter)(nil)
)

// ListRemote reads one page of a SOQL query of every live Contact (up to
// QueryBatchSize per request): the first page for cursor "", else the page
// at cursor, the nextRecordsUrl of the previous page (Salesforce keeps a
// query's cursor for 15 minutes of inactivity; an expired one is a
// permanent INVALID_QUERY_LOCATOR error: list again from ""). Contacts are
// mapped as Fetch maps them, with ID and Tandem_User_Id__c as UserID. next
// is "" after the last page. Errors follow the contract's kinds.
func (a *Adapter) ListRemote(ctx context.Context, cursor string) ([]integrations.RemoteObject, string, error) {
	target := a.queryURL(fmt.Sprintf("SELECT %s FROM Contact", strings.Join(a.contactFieldNames(), ", ")))
	if cursor != "" {
		if !strings.HasPrefix(cursor, "/services/data/") || strings.Contains(cursor, "..") {
			return nil, "", integrations.Permanent(fmt.Errorf("salesforce: listing contacts: %q is not a nextRecordsUrl", cursor))
		}
		target = strings.TrimRight(a.cfg.InstanceURL, "/") + cursor
	}
	recs, next, err := a.queryPage(ctx, target)
	if err != nil {
		return nil, "", fmt.Errorf("salesforce: listing contacts: %w", err)
	}
	return a.remoteObjects(ctx, recs), next, nil
}

// Candidates returns the live contacts tagged with userID (Tandem_User_Id__c)
// or holding one of emails (Email; Salesforce compares text ignoring case),
// each once, in one SOQL query (more requests only if it matched over
// QueryBatchSize contacts). Salesforce's query is an exact read, so byTag
// costs nothing more and is ignored. Errors follow the contract's kinds.
func (a *Adapter) Candidates(ctx context.Context, userID string, emails []string, _ bool) ([]integrations.RemoteObject, error) {
	var conds []string
	if userID != "" {
		conds = append(conds, ExternalIDField+" = "+soqlString(userID))
	}
	var quoted []string
	seen := map[string]bool{}
	for _, e := range emails {
		if k := strings.ToLower(e); e != "" && !seen[k] {
			seen[k] = true
			quoted = append(quoted, soqlString(e))
		}
	}
	if len(quoted) > 0 {
		conds = append(conds, "Email IN ("+strings.Join(quoted, ", ")+")")
	}
	if len(conds) == 0 {
		return nil, nil
	}
	target := a.queryURL(fmt.Sprintf("SELECT %s FROM Contact WHERE %s", strings.Join(a.contactFieldNames(), ", "), strings.Join(conds, " OR ")))
	var out []integrations.RemoteObject
	ids := map[string]bool{}
	for target != "" {
		recs, next, err := a.queryPage(ctx, target)
		if err != nil {
			return nil, fmt.Errorf("salesforce: looking up the contacts of user %s: %w", userID, err)
		}
		for _, o := range a.remoteObjects(ctx, recs) {
			if !ids[o.ID] {
				ids[o.ID] = true
				out = append(out, o)
			}
		}
		target = ""
		if next != "" {
			target = strings.TrimRight(a.cfg.InstanceURL, "/") + next
		}
	}
	return out, nil
}

// contactFieldNames are the fields listing and matching read.
func (a *Adapter) contactFieldNames() []string {
	fields := []string{"Id", "Email", "FirstName", "LastName", "Phone", ExternalIDField}
	if f := a.cfg.MetadataField; f != "" {
		fields = append(fields, f)
	}
	return fields
}

// queryURL is the URL of the SOQL query q.
func (a *Adapter) queryURL(q string) string {
	return strings.TrimSuffix(a.base, "/sobjects/Contact") + "/query?q=" + url.QueryEscape(q)
}

// soqlString quotes s as a SOQL string literal.
func soqlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return "'" + r.Replace(s) + "'"
}

// queryPage reads one page of query results at target: its records as
// field → text (booleans as "true"/"false", nulls left out) and the path
// of the next page, "" after the last.
func (a *Adapter) queryPage(ctx context.Context, target string) ([]map[string]string, string, error) {
	h := http.Header{"Sforce-Query-Options": {"batchSize=" + strconv.Itoa(QueryBatchSize)}}
	r, err := a.doURL(ctx, http.MethodGet, target, nil, maxQueryAnswerBytes, h)
	if err == nil {
		err = classify(r)
	}
	if err != nil {
		return nil, "", err
	}
	var page struct {
		Done           bool             `json:"done"`
		NextRecordsURL string           `json:"nextRecordsUrl"`
		Records        []map[string]any `json:"records"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		return nil, "", fmt.Errorf("unreadable query answer (%d bytes): %w", len(r.body), err)
	}
	recs := make([]map[string]string, len(page.Records))
	for i, rec := range page.Records {
		m := make(map[string]string, len(rec))
		for k, v := range rec {
			switch v := v.(type) {
			case string:
				m[k] = v
			case bool:
				m[k] = strconv.FormatBool(v)
			}
		}
		recs[i] = m
	}
	next := ""
	if !page.Done {
		next = page.NextRecordsURL
		if next == "" {
			return nil, "", fmt.Errorf("query answer not done but without nextRecordsUrl")
		}
	}
	return recs, next, nil
}

// remoteObjects maps query records as Fetch maps a contact.
func (a *Adapter) remoteObjects(ctx context.Context, recs []map[string]string) []integrations.RemoteObject {
	out := make([]integrations.RemoteObject, 0, len(recs))
	for _, f := range recs {
		if deleted, _ := strconv.ParseBool(f["IsDeleted"]); deleted || f["Id"] == "" {
			continue
		}
		n := Notification{Fields: f, ContactID: f["Id"], TandemUserID: f[ExternalIDField],
			Email: f["Email"], FirstName: f["FirstName"], LastName: f["LastName"], Phone: f["Phone"]}
		c, without := a.inboundCustomer(ctx, n)
		out = append(out, integrations.RemoteObject{ID: n.ContactID, UserID: n.TandemUserID, Customer: c, WithoutMetadata: without})
	}
	return out
}
