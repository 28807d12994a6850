package stripefake

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Dashboard changes bypass the API: no request, no idempotency, no faults,
// and their events carry a null request id and idempotency key, as changes
// made by a person in the Stripe dashboard do.

// DashboardCreate adds a customer as if created in the dashboard and emits
// customer.created. c.ID may be empty (an id is assigned) or a new "cus_" id;
// Created is always the Clock time and Deleted is ignored. It returns the
// stored customer, or an error if c.ID is already taken or c breaks the
// API's limits (email format, metadata size).
func (s *Server) DashboardCreate(c Customer) (Customer, error) {
	c.Created = time.Time{}
	return s.outsideCreate(c, true)
}

// DashboardUpdate edits a live customer as if in the dashboard: edit gets a
// copy to change (changes to ID, Created and Deleted are ignored). If
// anything changed it emits customer.updated with previous_attributes. It
// returns the stored customer, or an error wrapping ErrNotFound, or an error
// if the edit breaks the API's limits (nothing is changed then).
func (s *Server) DashboardUpdate(id string, edit func(*Customer)) (Customer, error) {
	return s.outsideUpdate(id, edit, true)
}

// DashboardDelete deletes a live customer as if in the dashboard and emits
// customer.deleted. It returns an error wrapping ErrNotFound if the customer
// does not exist or is already deleted.
func (s *Server) DashboardDelete(id string) error {
	return s.outsideDelete(id, true)
}

// outsideCreate adds c as made outside the API (the dashboard, or silently
// with no event unless emit): an id is assigned if c has none, Created is
// the Clock time unless c's is in the past.
func (s *Server) outsideCreate(c Customer, emit bool) (Customer, error) {
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
	if emit {
		s.emit(EventCustomerCreated, c, nil, origin{}, now)
	}
	return c.clone(), nil
}

// outsideUpdate edits a live customer outside the API; with emit a change
// emits customer.updated.
func (s *Server) outsideUpdate(id string, edit func(*Customer), emit bool) (Customer, error) {
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
	if prev, changed := previousAttributes(rec.c, upd); changed {
		rec.c = upd.clone()
		if emit {
			s.emit(EventCustomerUpdated, rec.c, prev, origin{}, s.now())
		}
	}
	return rec.c.clone(), nil
}

// outsideDelete deletes a live customer outside the API; with emit it
// emits customer.deleted.
func (s *Server) outsideDelete(id string, emit bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.byID[id]
	if !ok || rec.c.Deleted {
		return fmt.Errorf("deleting customer %s: %w", id, ErrNotFound)
	}
	if emit {
		s.emit(EventCustomerDeleted, rec.c, nil, origin{}, s.now())
	}
	rec.c.Deleted = true
	return nil
}

// Customers returns every customer ever created, deleted ones included
// (Deleted set), in creation order.
func (s *Server) Customers() []Customer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Customer, len(s.customers))
	for i, rec := range s.customers {
		out[i] = rec.c.clone()
	}
	return out
}

// Customer returns the customer with the given id, deleted or not, and
// whether it exists.
func (s *Server) Customer(id string) (Customer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.byID[id]
	if !ok {
		return Customer{}, false
	}
	return rec.c.clone(), true
}

// CustomersWithMetadata returns the customers, deleted ones included, whose
// metadata[key] equals value, in creation order. With key
// "tandem_user_id" it answers "how many customers exist for this user".
func (s *Server) CustomersWithMetadata(key, value string) []Customer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Customer
	for _, rec := range s.customers {
		if v, ok := rec.c.Metadata[key]; ok && v == value {
			out = append(out, rec.c.clone())
		}
	}
	return out
}

// CountCreates returns how many customers were created through the API.
// Replays of an idempotent create and dashboard creates do not count.
func (s *Server) CountCreates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.CustomersCreated
}

// Requests returns every API request received so far, in the order they
// were answered, with their parameters and outcome.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.requests)
	for i := range out {
		out[i].Params = maps.Clone(out[i].Params)
	}
	return out
}

// IdempotencyKeys returns how many idempotency keys the fake holds.
func (s *Server) IdempotencyKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.idem)
}

// Stats returns request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Events returns every event emitted so far, oldest first.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, len(s.events))
	for i, ev := range s.events {
		out[i] = *ev
	}
	return out
}

// Event returns the event with the given id and whether it exists.
func (s *Server) Event(id string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev, ok := s.eventsByID[id]
	if !ok {
		return Event{}, false
	}
	return *ev, true
}
