package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/store"
)

// OutcomeConflict: link before create found several remote objects that
// may be the user's; nothing was created and the link shows conflict with
// their ids (an outcome of Pusher.Push and a label of
// tandem_worker_messages_total).
const OutcomeConflict = "conflict"

// Pusher pushes one user to one provider under the user's lease: the
// worker's unit of work, which tandemctl backfill shares so that both follow
// the same rules (link before create, attempts, fencing).
//
// # Link before create
//
// Before it creates a remote object for a user with none recorded, the
// Pusher looks for one that already belongs to the user
// (integrations.ChooseLink): the single live object tagged with the user's
// id, or, with Config.LinkByEmail, the single live untagged object with the
// user's email, case-insensitively. It is linked and the user's state pushed
// over it (which tags it). Several candidates: nothing is created, the link
// is marked conflict with their ids in last_error, and the message is done
// (an operator resolves it, then resyncs). The candidates come from
// Request.Candidates when the caller has them (backfill lists every object
// once), else from the provider's integrations.Matcher (Config.Matcher; a
// provider without one creates without looking). The lookup costs one
// provider request per create (Stripe: a list filtered by email); with
// LinkByEmail off it is made only after a push with an unknown outcome.
type Pusher struct {
	provider integrations.Provider
	name     string
	store    Store
	cfg      Config
	users    keyedMutex
}

// NewPusher returns a Pusher for p (decorated as the caller likes; the
// optional interfaces come from cfg.Finder and cfg.Matcher). Only cfg's
// LeaseTTL, PushTimeout, Finder, Matcher and LinkByEmail are read.
func NewPusher(p integrations.Provider, st Store, cfg Config) *Pusher {
	cfg.setDefaults()
	return &Pusher{provider: p, name: p.Name(), store: st, cfg: cfg}
}

// Request is one push of one user.
type Request struct {
	UserID string
	// Version is the version the message announces: a link whose synced
	// version covers it is skipped. The user's current state is pushed.
	Version int64
	// Attempt is the delivery's attempt number (from 1) and Final whether
	// a transient failure will not be retried: the link is marked failed
	// then, pending otherwise.
	Attempt int
	Final   bool
	// Candidates, if not nil, are the remote objects that may be the
	// user's (from a listing), used instead of asking the Matcher; an
	// empty non-nil slice means "looked: none".
	Candidates []integrations.RemoteObject
}

// Push pushes the user req names, as it is now, under the user's lease, and
// returns the outcome (OutcomeSynced, OutcomeDeleted, OutcomeSkipped,
// OutcomeConflict) or an error: store.ErrNotFound for an unknown user,
// store.ErrBusy or store.ErrLeaseLost when another push holds or took the
// user, the provider's error otherwise (see the package's retry rules).
func (p *Pusher) Push(ctx context.Context, req Request) (string, error) {
	// Pushes of one user in this process wait for each other here rather
	// than bounce off the lease.
	defer p.users.lock(req.UserID)()
	attempt, final := req.Attempt, req.Final
	outcome := OutcomeSkipped
	var hash string // of the state the plan chose to push (push runs on the same read)
	plan := func(u store.User, l store.Link) store.Plan {
		if l.SyncedVersion >= req.Version {
			outcome = OutcomeSkipped // a push at this version or later is recorded
			return store.Plan{Skip: true}
		}
		if u.DeletedAt != nil {
			return store.Plan{Attempt: store.Attempt{Version: u.Version}}
		}
		hash = customerOf(u).Hash()
		if l.RemoteID != nil && l.PushedHash != nil && *l.PushedHash == hash &&
			(!l.Unsure() || l.AttemptHash != nil && *l.AttemptHash == hash) {
			// The provider is known to hold this state (pushed before, or
			// it came from the provider).
			outcome = OutcomeSynced
			version := u.Version
			return store.Plan{Record: &store.LinkUpdate{Status: store.LinkSynced, SyncedVersion: &version, ClearAttempt: true}}
		}
		return store.Plan{Attempt: store.Attempt{Version: u.Version, Hash: hash, Email: u.Email}}
	}
	push := func(ctx context.Context, u store.User, l store.Link, seq int64) (store.LinkUpdate, error) {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.PushTimeout)
		defer cancel()
		c := customerOf(u)
		link := integrations.Link{RemoteID: deref(l.RemoteID), MetadataKeys: l.MetadataKeyList(), Attempt: seq,
			Unsure: l.Unsure(), UnsureEmail: deref(l.AttemptEmail)}
		version := u.Version
		if u.DeletedAt != nil {
			up, err := p.delete(ctx, c, link, attempt, final)
			if err == nil {
				outcome = OutcomeDeleted
				up.SyncedVersion = &version
			}
			return up, err
		}
		if link.RemoteID == "" {
			choice, looked, err := p.choose(ctx, c, link, req.Candidates)
			if err != nil {
				return failure(err, attempt, final), providerError{err}
			}
			if len(choice.Conflict) > 0 {
				// Nothing was created; an operator decides. The attempt is
				// settled: what it may have made is among the candidates.
				outcome = OutcomeConflict
				msg := choice.ConflictMessage(p.name)
				return store.LinkUpdate{Status: store.LinkConflict, LastError: &msg, ClearAttempt: true}, nil
			}
			link.Looked = looked
			if choice.RemoteID != "" {
				link.RemoteID, link.MetadataKeys, link.Unsure = choice.RemoteID, choice.MetadataKeys, false
			}
		}
		res, err := p.provider.Upsert(ctx, c, link)
		if err != nil {
			up := failure(err, attempt, final)
			if res.RemoteID != "" {
				up.RemoteID = &res.RemoteID
			}
			// Nor was a create refused for good executed (a create is one
			// request, and a 4xx executes nothing); see failure for the
			// rest.
			if integrations.IsPermanent(err) && link.RemoteID == "" && res.RemoteID == "" {
				up.ClearAttempt = true
			}
			return up, providerError{err}
		}
		outcome = OutcomeSynced
		up := store.LinkUpdate{Status: store.LinkSynced, RemoteID: &res.RemoteID, SyncedVersion: &version,
			PushedHash: &hash, ClearAttempt: true, MetadataKeys: res.MetadataKeys, SetMetadataKeys: true}
		if !res.RemoteTime.IsZero() {
			up.PushedRemoteAt = &res.RemoteTime
		}
		if len(res.Warnings) > 0 {
			msg := strings.Join(res.Warnings, "; ")
			up.LastError = &msg
		}
		return up, nil
	}
	err := p.store.Sync(ctx, req.UserID, p.name, p.cfg.LeaseTTL, plan, push)
	return outcome, err
}

// choice is what link before create decided, with the metadata keys the
// chosen object holds (nil if unknown).
type choice struct {
	integrations.LinkChoice
	MetadataKeys []string
}

// choose applies link before create for a user with no remote object
// recorded (see Pusher). looked reports that candidates were looked for.
func (p *Pusher) choose(ctx context.Context, c integrations.Customer, link integrations.Link, known []integrations.RemoteObject) (choice, bool, error) {
	cands := known
	// After a push with an unknown outcome, a listing made before it may
	// lack what it created: only a fresh read will do.
	if cands == nil || link.Unsure {
		if p.cfg.Matcher == nil || !p.cfg.LinkByEmail && !link.Unsure {
			// Without linking by email only an object tagged with the
			// user can be its, and only an earlier push of this Tandem
			// (whose outcome is unknown) can have made one: a first
			// create costs no lookup.
			return choice{}, false, nil
		}
		var err error
		cands, err = p.cfg.Matcher.Candidates(ctx, c.UserID, []string{c.Email, link.UnsureEmail}, link.Unsure)
		if err != nil {
			return choice{}, false, err
		}
	}
	ch := choice{LinkChoice: integrations.ChooseLink(c.UserID, c.Email, p.cfg.LinkByEmail, cands)}
	for _, o := range cands {
		if o.ID == ch.RemoteID && !o.WithoutMetadata {
			ch.MetadataKeys = make([]string, 0, len(o.Customer.Metadata))
			for k := range o.Customer.Metadata {
				ch.MetadataKeys = append(ch.MetadataKeys, k)
			}
			slices.Sort(ch.MetadataKeys)
		}
	}
	return ch, true, nil
}

// delete removes the user's remote object. Without a recorded one, a push
// with an unknown outcome may have made one: it is looked up by its tag
// (Config.Finder) and deleted, and its id recorded.
func (p *Pusher) delete(ctx context.Context, c integrations.Customer, link integrations.Link, attempt int, final bool) (store.LinkUpdate, error) {
	ids := []string{link.RemoteID}
	if link.RemoteID == "" {
		ids = nil
		if link.Unsure && p.cfg.Finder != nil {
			found, err := p.cfg.Finder.FindTagged(ctx, c.UserID, []string{link.UnsureEmail, c.Email})
			if err != nil {
				return failure(err, attempt, final), providerError{err}
			}
			ids = found
		}
	}
	for _, id := range ids {
		one := link
		one.RemoteID = id
		if err := p.provider.Delete(ctx, c, one); err != nil {
			return failure(err, attempt, final), providerError{err}
		}
	}
	up := store.LinkUpdate{Status: store.LinkDeleted, ClearAttempt: true}
	if link.RemoteID == "" && len(ids) > 0 {
		up.RemoteID = &ids[0]
		if len(ids) > 1 {
			msg := "deleted the objects an unrecorded push had made: " + strings.Join(ids, ", ")
			up.LastError = &msg
		}
	}
	return up, nil
}

// keyedMutex serialises work per key within the process.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// providerError marks an error of the provider (not of MySQL): only those
// count towards MaxAttempts.
type providerError struct{ err error }

func (e providerError) Error() string { return e.err.Error() }
func (e providerError) Unwrap() error { return e.err }

func isProviderError(err error) bool {
	var pe providerError
	return errors.As(err, &pe)
}

// failure is the link update recorded for a failed push: failed when the
// message will be dead-lettered, pending (with the error) while it is
// retried. A rate limit executed nothing, so the provider holds what it held
// (the attempt is cleared); any other failure may have executed (a 5xx after
// the write, a timeout): the attempt stays recorded as unknown.
func failure(err error, attempt int, final bool) store.LinkUpdate {
	msg := err.Error()
	if _, limited := integrations.RetryAfter(err); limited && !integrations.IsPermanent(err) {
		// Waited out, never dead-lettered for it (see handle).
		msg = "rate limited by the provider, waiting: " + msg
		return store.LinkUpdate{Status: store.LinkPending, LastError: &msg, ClearAttempt: true}
	}
	if errors.Is(err, integrations.ErrNotFound) {
		msg = "the remote object no longer exists: " + msg
	}
	if integrations.IsPermanent(err) || final {
		if final && !integrations.IsPermanent(err) {
			msg = fmt.Sprintf("gave up after %d attempts: %s", attempt, msg)
		}
		return store.LinkUpdate{Status: store.LinkFailed, LastError: &msg}
	}
	msg = fmt.Sprintf("attempt %d failed, retrying: %s", attempt, msg)
	return store.LinkUpdate{Status: store.LinkPending, LastError: &msg}
}

func customerOf(u store.User) integrations.Customer {
	return integrations.Customer{UserID: u.ID, Email: u.Email, Name: u.Name, Phone: u.Phone,
		Metadata: u.Metadata, Version: u.Version}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
