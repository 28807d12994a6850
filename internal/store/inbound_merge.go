package store

import "fmt"

// merged moves link l of the user cur to the object its remote object was
// merged into (t.ev.MergedInto; Salesforce deletes a merged contact and
// keeps the survivor): the user lives on. What the survivor holds is not
// known, so the link is pending and an outbox row asks the provider's
// worker to push the user over it (the survivor's own change event, usually
// right after, applies as any remote edit would). A survivor that another
// user is linked to is a conflict: nothing moves, the link says why.
func (t *inboundTx) merged(l Link, cur User, set map[string]any) error {
	var others []string
	if err := t.tx.Raw(`SELECT user_id FROM provider_links WHERE provider = ? AND remote_id = ? AND user_id <> ? FOR UPDATE`,
		t.provider, t.ev.MergedInto, l.UserID).Scan(&others).Error; err != nil {
		return fmt.Errorf("looking up the link of %s: %w", t.ev.MergedInto, translate(err))
	}
	if len(others) > 0 {
		return t.conflict(l.UserID, set, InboundConflict, fmt.Sprintf("%s object %s was merged into %s, which user %s is linked to; event %s was not applied (merge or delete one of the users)",
			t.provider, t.ev.RemoteID, t.ev.MergedInto, others[0], t.ev.EventID))
	}
	set["remote_id"] = t.ev.MergedInto
	set["status"] = LinkPending
	set["pushed_hash"] = nil
	set["metadata_keys"] = nil
	set["synced_version"] = max(cur.Version-1, 0)
	set["last_error"] = nil
	if err := t.writeLink(l.UserID, set, true); err != nil {
		return err
	}
	if err := t.askPush(cur); err != nil {
		return err
	}
	t.res.Version = cur.Version
	return t.outcome(InboundRelinked, l.UserID, fmt.Sprintf("%s object %s was merged into %s: the user is linked to it now", t.provider, t.ev.RemoteID, t.ev.MergedInto))
}
