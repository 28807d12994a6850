package stripefake

import (
	"fmt"
	"time"
)

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
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.ID == "" {
		c.ID = newID("cus_", 14)
	} else if _, ok := s.byID[c.ID]; ok {
		return Customer{}, fmt.Errorf("stripefake: customer %s already exists", c.ID)
	}
	now := s.now()
	c = c.clone()
	if c.Created.IsZero() || c.Created.After(now) {
		c.Created = now
	}
	c.Created = c.Created.Truncate(time.Second)
	c.Deleted = false
	if c.InvoicePrefix == "" {
		c.InvoicePrefix = newInvoicePrefix()
	}
	if c.TaxExempt == "" {
		c.TaxExempt = "none"
	}
	if c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	if err := c.validate(); err != nil {
		return Customer{}, err
	}
	s.insertCustomer(c)
	return c.clone(), nil
}

// SilentUpdate edits a live customer without emitting any event: edit gets
// a copy to change (changes to ID, Created and Deleted are ignored). It
// returns the stored customer, or an error wrapping ErrNotFound, or an
// error if the edit breaks the API's limits (nothing is changed then).
func (s *Server) SilentUpdate(id string, edit func(*Customer)) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.byID[id]
	if !ok || rec.c.Deleted {
		return Customer{}, fmt.Errorf("updating customer %s: %w", id, ErrNotFound)
	}
	upd := rec.c.clone()
	edit(&upd)
	upd.ID, upd.Created, upd.Deleted = rec.c.ID, rec.c.Created, false
	if upd.Metadata == nil {
		upd.Metadata = map[string]string{}
	}
	if upd.TaxExempt == "" {
		upd.TaxExempt = "none"
	}
	if err := upd.validate(); err != nil {
		return Customer{}, fmt.Errorf("updating customer %s: %w", id, err)
	}
	rec.c = upd.clone()
	return rec.c.clone(), nil
}

// SilentDelete deletes a live customer without emitting customer.deleted
// (a deletion whose webhook was lost). It returns an error wrapping
// ErrNotFound if the customer does not exist or is already deleted.
func (s *Server) SilentDelete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.byID[id]
	if !ok || rec.c.Deleted {
		return fmt.Errorf("deleting customer %s: %w", id, ErrNotFound)
	}
	rec.c.Deleted = true
	return nil
}
