// Package reconcile compares what Tandem holds with what a provider holds,
// for every linked user at once (tandemctl reconcile), and repairs the
// differences on request.
//
// It lists the provider's objects in pages (integrations.Lister: Stripe 100
// customers per request, Salesforce 2,000 contacts), then reads the links in
// pages of the database, so checking 20,000 users costs about 200 Stripe
// requests, never one per user. Each live user whose link names a remote
// object is then one of:
//
//   - in sync: the object holds the user's email, name, phone and metadata
//     (metadata is not compared when the provider holds none);
//   - drift: Tandem believes the provider holds the user's state (the link
//     is synced at the user's version, no push in flight or of unknown
//     outcome, unchanged since the listing began) and the object differs:
//     reported per field;
//   - unsettled: a push is owed or running (the link is pending, failed, in
//     conflict, in flight, or changed during the run): the link already
//     says so, and nothing is compared or repaired;
//   - missing: the object is not in the listing (deleted in the provider
//     with no event Tandem saw).
//
// Remote objects that no link names are unlinked.
//
// Repairs: drift is settled by pushing Tandem's state again
// (store.Resync), or with PreferRemote by applying the object's state
// through the inbound path (store.ApplyInbound, the webhook's rules: an
// invalid state, an email another user holds and ordering are handled as
// for a webhook event dated when the object was listed, so a change made
// since on either side wins; no outbox row); a missing object is confirmed gone
// with a read, then the link forgets it and the worker links or creates
// another (store.ForgetRemote); with Import, unlinked objects are applied
// as created objects by the inbound rules (linked to the user with their
// email, or made users).
package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/webhook"
)

// Store is what Run reads and repairs with (*store.Store).
type Store interface {
	LinkedUsers(ctx context.Context, provider, afterUserID string, limit int) ([]store.LinkedUser, error)
	Resync(ctx context.Context, userID, provider string) error
	ForgetRemote(ctx context.Context, userID, provider, goneRemoteID string) (bool, error)
	ApplyInbound(ctx context.Context, provider string, ev store.InboundChange, refetch store.RefetchFunc) (store.InboundResult, error)
}

// Options configure Run.
type Options struct {
	Provider string
	Lister   integrations.Lister
	// Fetcher, optional, reads one object: it confirms that a missing
	// object is gone before the link forgets it, and settles ties when a
	// remote state is applied. Without it missing objects are not
	// repaired.
	Fetcher integrations.WebhookReceiver
	// Repair settles drift, missing objects and (with Import) unlinked ones.
	Repair       bool
	PreferRemote bool
	Import       bool
	// Progress, if set, is called after each page listed with the count
	// of objects listed so far.
	Progress func(listed int)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Drift is a user whose remote object differs from it.
type Drift struct {
	UserID   string   `json:"user_id"`
	RemoteID string   `json:"remote_id"`
	Fields   []string `json:"fields"` // of email, name, phone, metadata
}

// Unlinked is a remote object no link names.
type Unlinked struct {
	RemoteID string `json:"remote_id"`
	Email    string `json:"email"`
}

// Missing is a link whose remote object is gone.
type Missing struct {
	UserID   string `json:"user_id"`
	RemoteID string `json:"remote_id"`
}

// Failure is a repair that could not be made.
type Failure struct {
	UserID   string `json:"user_id,omitempty"`
	RemoteID string `json:"remote_id"`
	Error    string `json:"error"`
}

// Report is what Run found and did (DESIGN §9). Checked counts the live
// users with a link naming a remote object: InSync + len(Drift) +
// Unsettled + len(MissingRemote).
type Report struct {
	Provider       string     `json:"provider"`
	Checked        int        `json:"checked"`
	InSync         int        `json:"in_sync"`
	Drift          []Drift    `json:"drift"`
	UnlinkedRemote []Unlinked `json:"unlinked_remote"`
	MissingRemote  []Missing  `json:"missing_remote"`
	Repaired       int        `json:"repaired"`
	// Unsettled counts users whose link owes a push (pending, failed,
	// conflict, in flight, or changed during the run): not compared.
	Unsettled int `json:"unsettled"`
	// Listed is the count of remote objects listed, in Pages requests.
	Listed int `json:"listed"`
	Pages  int `json:"pages"`
	// Imported counts the outcomes of -import by store.InboundOutcome.
	Imported map[string]int `json:"imported,omitempty"`
	// Failures are repairs that could not be made.
	Failures []Failure `json:"failures,omitempty"`
}

// linkPage is how many links are read per database query.
const linkPage = 1000

// Run lists the provider's objects, compares them with the links, and
// repairs if asked. An error of the listing or the database stops it; a
// repair that fails is recorded in Failures and the others go on.
func Run(ctx context.Context, st Store, o Options) (Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	rep := Report{Provider: o.Provider, Drift: []Drift{}, UnlinkedRemote: []Unlinked{}, MissingRemote: []Missing{}}
	start := o.Now()

	remote := map[string]integrations.RemoteObject{}
	readAt := map[string]time.Time{}
	var order []string
	for cursor := ""; ; {
		asked := o.Now()
		page, next, err := o.Lister.ListRemote(ctx, cursor)
		if err != nil {
			return rep, fmt.Errorf("listing %s objects (after %d): %w", o.Provider, rep.Listed, err)
		}
		rep.Pages++
		for _, obj := range page {
			if _, dup := remote[obj.ID]; !dup && obj.ID != "" {
				remote[obj.ID] = obj
				readAt[obj.ID] = asked
				order = append(order, obj.ID)
			}
		}
		rep.Listed = len(remote)
		if o.Progress != nil {
			o.Progress(rep.Listed)
		}
		if next == "" {
			break
		}
		cursor = next
	}

	known := map[string]bool{}
	drifted := map[string]store.LinkedUser{}
	for after := ""; ; {
		links, err := st.LinkedUsers(ctx, o.Provider, after, linkPage)
		if err != nil {
			return rep, err
		}
		for _, l := range links {
			known[l.RemoteID] = true
			if l.User.DeletedAt != nil || l.Status == store.LinkDeleted {
				continue
			}
			rep.Checked++
			obj, listed := remote[l.RemoteID]
			changed := !l.LinkUpdatedAt.Before(start)
			switch {
			case !listed && !changed:
				rep.MissingRemote = append(rep.MissingRemote, Missing{UserID: l.User.ID, RemoteID: l.RemoteID})
			case !listed || changed || !l.Settled():
				rep.Unsettled++
			default:
				if fields := Diff(l.User, obj); len(fields) > 0 {
					rep.Drift = append(rep.Drift, Drift{UserID: l.User.ID, RemoteID: l.RemoteID, Fields: fields})
					drifted[l.User.ID] = l
				} else {
					rep.InSync++
				}
			}
		}
		if len(links) < linkPage {
			break
		}
		after = links[len(links)-1].User.ID
	}
	for _, id := range order {
		if !known[id] {
			rep.UnlinkedRemote = append(rep.UnlinkedRemote, Unlinked{RemoteID: id, Email: remote[id].Customer.Email})
		}
	}
	if !o.Repair {
		return rep, nil
	}
	return repair(ctx, st, o, rep, listing{remote, readAt}, drifted)
}

// listing is what the listing read: the objects, and when each was read
// (the time its page was asked for: the object held that state then or a
// moment later).
type listing struct {
	objects map[string]integrations.RemoteObject
	readAt  map[string]time.Time
}

// Diff names the fields in which obj differs from u: email, name, phone,
// metadata (not compared when obj does not carry the user's metadata).
func Diff(u store.User, obj integrations.RemoteObject) []string {
	var fields []string
	c := obj.Customer
	if c.Email != u.Email {
		fields = append(fields, "email")
	}
	if c.Name != u.Name {
		fields = append(fields, "name")
	}
	if c.Phone != u.Phone {
		fields = append(fields, "phone")
	}
	if !obj.WithoutMetadata && !(len(c.Metadata) == 0 && len(u.Metadata) == 0) && !maps.Equal(c.Metadata, u.Metadata) {
		fields = append(fields, "metadata")
	}
	return fields
}

func repair(ctx context.Context, st Store, o Options, rep Report, ls listing, drifted map[string]store.LinkedUser) (Report, error) {
	remote := ls.objects
	fail := func(userID, remoteID string, err error) {
		rep.Failures = append(rep.Failures, Failure{UserID: userID, RemoteID: remoteID, Error: err.Error()})
	}
	for _, d := range rep.Drift {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if !o.PreferRemote {
			if err := st.Resync(ctx, d.UserID, o.Provider); err != nil {
				fail(d.UserID, d.RemoteID, err)
				continue
			}
			rep.Repaired++
			continue
		}
		l, obj := drifted[d.UserID], remote[d.RemoteID]
		id := eventID(obj, "v"+strconv.FormatInt(l.User.Version, 10))
		res, err := apply(ctx, st, o, obj, ls.readAt[obj.ID], id, integrations.InboundUpdated)
		switch {
		case err != nil:
			fail(d.UserID, d.RemoteID, err)
		case res.Outcome == store.InboundApplied || res.Outcome == store.InboundUnchanged:
			rep.Repaired++
		default:
			fail(d.UserID, d.RemoteID, fmt.Errorf("the remote state was not applied: %s %s", res.Outcome, res.Detail))
		}
	}

	var stillMissing []Missing
	for _, m := range rep.MissingRemote {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if o.Fetcher == nil {
			fail(m.UserID, m.RemoteID, fmt.Errorf("%s cannot read one object: not repaired", o.Provider))
			stillMissing = append(stillMissing, m)
			continue
		}
		if _, found, err := o.Fetcher.Fetch(ctx, m.RemoteID); err != nil {
			fail(m.UserID, m.RemoteID, fmt.Errorf("confirming the object is gone: %w", err))
			stillMissing = append(stillMissing, m)
			continue
		} else if found {
			rep.Unsettled++ // the listing missed it: it is not gone
			continue
		}
		stillMissing = append(stillMissing, m)
		done, err := st.ForgetRemote(ctx, m.UserID, o.Provider, m.RemoteID)
		switch {
		case err != nil:
			fail(m.UserID, m.RemoteID, err)
		case done:
			rep.Repaired++
		}
	}
	if stillMissing == nil {
		stillMissing = []Missing{}
	}
	rep.MissingRemote = stillMissing

	if o.Import {
		rep.Imported = map[string]int{}
		for _, u := range rep.UnlinkedRemote {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			obj := remote[u.RemoteID]
			res, err := apply(ctx, st, o, obj, ls.readAt[obj.ID], eventID(obj, "import"), integrations.InboundCreated)
			if err != nil {
				fail("", u.RemoteID, err)
				continue
			}
			rep.Imported[string(res.Outcome)]++
			if res.Outcome == store.InboundCreated || res.Outcome == store.InboundLinked {
				rep.Repaired++
			}
		}
	}
	return rep, nil
}

// apply applies obj's state as an inbound event of kind, by the webhook's
// rules, dated when it was read: a change made in Tandem or the provider
// since then is newer, and wins by the ordering rules.
func apply(ctx context.Context, st Store, o Options, obj integrations.RemoteObject, readAt time.Time, id string, kind integrations.InboundKind) (store.InboundResult, error) {
	ev := integrations.InboundEvent{
		ID: id, Kind: kind, RawType: "tandemctl.reconcile", RemoteID: obj.ID, UserID: obj.UserID,
		OccurredAt: readAt.UTC(), Customer: obj.Customer, WithoutMetadata: obj.WithoutMetadata,
	}
	return webhook.Apply(ctx, st, o.Provider, o.Fetcher, ev, false)
}

// eventID is the synthetic inbound event id of applying obj's state:
// applying the same state for the same reason twice is a duplicate.
func eventID(obj integrations.RemoteObject, reason string) string {
	rid := obj.ID
	if len(rid) > 160 {
		sum := sha256.Sum256([]byte(rid))
		rid = hex.EncodeToString(sum[:16])
	}
	return "reconcile-" + rid + "-" + reason + "-" + obj.Customer.Hash()[:16]
}
