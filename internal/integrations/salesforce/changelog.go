package salesforce

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-sync/tandem/internal/integrations"
)

// EventContactMerged is the RawType of a change-log event for a contact
// deleted by a merge (MasterRecordId set): InboundDeleted with MergedInto,
// so the user is relinked to the surviving contact rather than deleted.
const EventContactMerged = "contact.merged"

// RecycleBinRetention is how long Salesforce keeps a deleted contact
// (queryAll finds it): a catch-up cursor older than this may have missed
// deletions (integrations.ErrCursorExpired).
const RecycleBinRetention = 15 * 24 * time.Hour

// ChangePageSize is the contacts one change-log query returns at most.
const ChangePageSize = 200

// changeReadMargin: a fully read log is taken to be read through this far
// behind Tandem's clock (the clocks' difference, late commits).
const changeReadMargin = 5 * time.Minute

var _ integrations.ChangeLog = (*Adapter)(nil)

// ReadChanges reads the contacts changed or deleted since the cursor
// (integrations.ChangeLog) with one SOQL queryAll request of up to
// ChangePageSize contacts, ordered by SystemModstamp and Id: queryAll also
// returns the contacts in the recycle bin, so one query finds changes and
// deletions (Outbound Messages never report a deletion). Each contact is
// mapped as ParseWebhook maps a notification about it: the live ones
// InboundUpdated (RawType contact.changed), the deleted ones InboundDeleted
// (contact.deleted), and those deleted by a merge InboundDeleted with
// MergedInto set to MasterRecordId (contact.merged; within one second they
// come before the other changes, so the survivor's own change finds the user
// relinked). The event id is "log-<contact id>-<SystemModstamp, unix
// seconds>-<digest of the record>": stable, so a contact read twice
// unchanged is one event, and one changed twice within a second two (it
// cannot be the
// Outbound Message's notification id; a change both notified and read is
// applied once and then recognised as a state the link holds).
//
// The cursor is "<RFC 3339 time>|<contact id>" (the last contact read, when
// more follow) or "<RFC 3339 time>" (the last second read, read again next
// time). A cursor older than RecycleBinRetention is an error
// wrapping integrations.ErrCursorExpired.
func (a *Adapter) ReadChanges(ctx context.Context, cursor string) (integrations.ChangePage, error) {
	now := time.Now()
	if cursor == "" {
		t := now.UTC().Truncate(time.Second)
		return integrations.ChangePage{Next: t.Format(time.RFC3339), ReadThrough: t}, nil
	}
	since, after, err := parseChangeCursor(cursor)
	if err != nil {
		return integrations.ChangePage{}, fmt.Errorf("salesforce: %w: %w", integrations.ErrCursorExpired, err)
	}
	if now.Sub(since) > RecycleBinRetention {
		return integrations.ChangePage{}, fmt.Errorf("salesforce: %w: the cursor is at %s, and deleted contacts are kept %s",
			integrations.ErrCursorExpired, since.Format(time.RFC3339), RecycleBinRetention)
	}
	fields := []string{"Id", "IsDeleted", "MasterRecordId", "Email", "FirstName", "LastName", "Phone", ExternalIDField,
		"LastModifiedDate", "LastModifiedById", "SystemModstamp"}
	if f := a.cfg.MetadataField; f != "" {
		fields = append(fields, f)
	}
	ts := since.UTC().Format(time.RFC3339)
	where := "SystemModstamp >= " + ts
	if after != "" {
		where = "(SystemModstamp > " + ts + " OR (SystemModstamp = " + ts + " AND Id > '" + after + "'))"
	}
	soql := "SELECT " + strings.Join(fields, ", ") + " FROM Contact WHERE " + where +
		" ORDER BY SystemModstamp, Id LIMIT " + strconv.Itoa(ChangePageSize)
	root := strings.TrimSuffix(a.base, "/sobjects/Contact")
	r, err := a.doURL(ctx, http.MethodGet, root+"/queryAll?q="+url.QueryEscape(soql), nil, maxAnswerBytes, nil)
	if err == nil {
		err = classify(r)
	}
	if err != nil {
		return integrations.ChangePage{}, fmt.Errorf("salesforce: reading the contacts changed since %s: %w", ts, err)
	}
	var answer struct {
		Records []map[string]any `json:"records"`
	}
	if err := json.Unmarshal(r.body, &answer); err != nil {
		return integrations.ChangePage{}, fmt.Errorf("salesforce: reading the contacts changed since %s: unreadable answer: %w", ts, err)
	}
	page := integrations.ChangePage{Requests: 1, More: len(answer.Records) >= ChangePageSize}
	last, lastID := since, after
	var merged, rest []integrations.InboundEvent
	for _, rec := range answer.Records {
		n := Notification{Fields: make(map[string]string, len(rec))}
		for k, v := range rec {
			switch v := v.(type) {
			case string:
				n.Fields[k] = v
			case bool:
				n.Fields[k] = strconv.FormatBool(v)
			}
		}
		stamp, err := parseRESTTime(n.Fields["SystemModstamp"])
		if err != nil || n.Fields["Id"] == "" {
			page.Skipped = append(page.Skipped, integrations.SkippedChange{ID: n.Fields["Id"], Reason: "salesforce: a contact without an Id or a SystemModstamp"})
			continue
		}
		last, lastID = stamp, n.Fields["Id"]
		ev, err := a.changeEvent(ctx, n, stamp, rec)
		if err != nil {
			page.Skipped = append(page.Skipped, integrations.SkippedChange{ID: ev.ID, Reason: err.Error()})
			continue
		}
		if ev.MergedInto != "" {
			merged = append(merged, ev)
		} else {
			rest = append(rest, ev)
		}
	}
	page.Events = mergesFirst(merged, rest)
	page.ReadThrough = last
	if !page.More {
		if t := now.Add(-changeReadMargin).UTC().Truncate(time.Second); t.After(last) {
			page.ReadThrough = t
		}
	}
	page.Next = last.UTC().Format(time.RFC3339)
	if lastID != "" && page.More {
		// Within a round, the next page starts after the last contact
		// read; between rounds the last second is read again (a contact
		// saved later in that second may sort before it), and what was
		// read is recognised by its event id.
		page.Next += "|" + lastID
	}
	return page, nil
}

// changeEvent maps one contact of the change log.
func (a *Adapter) changeEvent(ctx context.Context, n Notification, stamp time.Time, rec map[string]any) (integrations.InboundEvent, error) {
	n.ContactID = n.Fields["Id"]
	n.TandemUserID = n.Fields[ExternalIDField]
	n.Email, n.FirstName, n.LastName, n.Phone = n.Fields["Email"], n.Fields["FirstName"], n.Fields["LastName"], n.Fields["Phone"]
	n.LastModifiedByID = n.Fields["LastModifiedById"]
	n.IsDeleted, _ = strconv.ParseBool(n.Fields["IsDeleted"])
	ev := integrations.InboundEvent{ID: changeID(n.ContactID, stamp, rec)}
	modified, err := parseRESTTime(n.Fields["LastModifiedDate"])
	if err != nil {
		modified = stamp
	}
	n.LastModifiedDate = modified
	ev.Kind, ev.RawType = integrations.InboundUpdated, EventContactChanged
	ev.RemoteID, ev.UserID, ev.OccurredAt = n.ContactID, n.TandemUserID, modified
	ev.Echo = a.cfg.Inbound.IsEcho(n)
	if n.IsDeleted {
		ev.Kind, ev.RawType = integrations.InboundDeleted, EventContactDeleted
		// A deletion is dated by the deletion itself.
		ev.OccurredAt = cmp.Or(stamp, modified)
		if m := n.Fields["MasterRecordId"]; m != "" {
			ev.RawType, ev.MergedInto = EventContactMerged, m
		}
	}
	ev.Customer, ev.WithoutMetadata = a.inboundCustomer(ctx, n)
	raw, err := json.Marshal(rec)
	if err != nil {
		return ev, fmt.Errorf("salesforce: encoding contact %s: %w", n.ContactID, err)
	}
	ev.Raw = raw
	return ev, nil
}

// changeID is the event id of a contact as read: its id, its
// SystemModstamp (whole seconds) and a digest of the record, so a contact
// read again unchanged is the same event, and one changed twice within a
// second is two.
func changeID(id string, stamp time.Time, rec map[string]any) string {
	b, _ := json.Marshal(rec) // map keys sorted: the same record, the same bytes
	sum := sha256.Sum256(b)
	return "log-" + id + "-" + strconv.FormatInt(stamp.Unix(), 10) + "-" + hex.EncodeToString(sum[:8])
}

// mergesFirst orders events by time, merges before other changes of the
// same second (both lists are in time order).
func mergesFirst(merged, rest []integrations.InboundEvent) []integrations.InboundEvent {
	out := make([]integrations.InboundEvent, 0, len(merged)+len(rest))
	i, j := 0, 0
	for i < len(merged) || j < len(rest) {
		switch {
		case j == len(rest),
			i < len(merged) && !merged[i].OccurredAt.Truncate(time.Second).After(rest[j].OccurredAt.Truncate(time.Second)):
			out = append(out, merged[i])
			i++
		default:
			out = append(out, rest[j])
			j++
		}
	}
	return out
}

// parseRESTTime reads a REST API datetime (2026-12-01T17:00:00.000+0000).
func parseRESTTime(v string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.000-0700", "2006-01-02T15:04:05.000Z", time.RFC3339} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("unreadable datetime " + strconv.Quote(v))
}

func parseChangeCursor(c string) (since time.Time, after string, err error) {
	ts, after, _ := strings.Cut(c, "|")
	since, err = time.Parse(time.RFC3339, ts)
	if err != nil || strings.ContainsAny(after, "|'\\ ") || len(after) > 18 {
		return time.Time{}, "", errors.New("unreadable cursor " + strconv.Quote(c))
	}
	return since.UTC(), after, nil
}
