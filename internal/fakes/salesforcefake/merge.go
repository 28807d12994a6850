package salesforcefake

import "fmt"

// UIMerge merges contact victim into master as a person would in
// Salesforce: edit (if not nil) changes the master's fields (the values the
// person kept), the master is saved (LastModifiedById Options.UIUserID, an
// Outbound Message notification) and the victim goes to the recycle bin
// with MasterRecordId set to the master (no notification unless
// Options.NotifyDeletes). It returns the master, or an error wrapping
// ErrNotFound if either is not a live contact.
func (s *Server) UIMerge(masterID, victimID string, edit func(*Contact)) (Contact, error) {
	mid, _ := normalizeID(masterID)
	vid, _ := normalizeID(victimID)
	s.mu.Lock()
	defer s.mu.Unlock()
	master, ok := s.contacts[mid]
	victim, ok2 := s.contacts[vid]
	if !ok || !ok2 || master.IsDeleted || victim.IsDeleted || mid == vid {
		return Contact{}, fmt.Errorf("merging contact %s into %s: %w", victimID, masterID, ErrNotFound)
	}
	upd := master.clone()
	if edit != nil {
		edit(&upd)
	}
	upd.ID, upd.IsDeleted = master.ID, false
	upd.CreatedDate, upd.CreatedByID = master.CreatedDate, master.CreatedByID
	if err := s.checkUI(upd); err != nil {
		return Contact{}, fmt.Errorf("merging contact %s into %s: %w", victimID, masterID, err)
	}
	upd.LastModifiedDate, upd.LastModifiedByID = s.stamp(), s.opts.UIUserID
	*master = upd.clone()
	s.out.enqueue(master.ID, false)
	victim.MasterRecordID = master.ID
	s.remove(victim, s.opts.UIUserID)
	return upd, nil
}
