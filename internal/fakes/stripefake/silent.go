package stripefake

// Silent changes make customers and changes that send no event at all: the
// history of an account from before Tandem was connected (customers made
// when no webhook endpoint existed), and drift a webhook never reported (a
// lost delivery, an import straight into Stripe). Like dashboard changes
// they bypass the API (no request, no idempotency, no faults), but nothing
// is recorded in the event log either, so neither a webhook nor a reader of
// /v1/events can learn of them: only reading the customers (list,
// retrieve, search) shows them.

// SilentCreate adds a customer without emitting any event. c.ID may be
// empty (an id is assigned) or a new "cus_" id; c.Created may be a time in
// the past (the customer's history predates Tandem), and is the Clock time
// when zero or in the future. It returns the stored customer, or an error
// if c.ID is taken or c breaks the API's limits.
func (s *Server) SilentCreate(c Customer) (Customer, error) {
	return s.outsideCreate(c, false)
}

// SilentUpdate edits a live customer without emitting any event: edit gets
// a copy to change (changes to ID, Created and Deleted are ignored). It
// returns the stored customer, or an error wrapping ErrNotFound, or an
// error if the edit breaks the API's limits (nothing is changed then).
func (s *Server) SilentUpdate(id string, edit func(*Customer)) (Customer, error) {
	return s.outsideUpdate(id, edit, false)
}

// SilentDelete deletes a live customer without emitting customer.deleted
// (a deletion whose webhook was lost). It returns an error wrapping
// ErrNotFound if the customer does not exist or is already deleted.
func (s *Server) SilentDelete(id string) error {
	return s.outsideDelete(id, false)
}
