package stripefake

import (
	"crypto/rand"
	"net/http"
	"time"
)

func (s *Server) createCustomer(c *call) response {
	p, err := parseCustomerParams(c.fields)
	if err == nil {
		err = s.rejectEmail(p)
	}
	if err != nil {
		return err.response()
	}
	return s.execute(c, func(now time.Time) response {
		cust := Customer{
			ID:            newID("cus_", 14),
			Created:       now,
			InvoicePrefix: newInvoicePrefix(),
			TaxExempt:     "none",
			Metadata:      map[string]string{},
		}
		if err := p.apply(&cust); err != nil {
			return err.response()
		}
		s.insertCustomer(cust)
		s.stats.CustomersCreated++
		c.rec.CustomerID = cust.ID
		s.emit(EventCustomerCreated, cust, nil, c.origin(), now)
		return jsonResponse(cust)
	})
}

func (s *Server) retrieveCustomer(c *call, id string) response {
	for _, f := range c.fields {
		if f.root != "expand" {
			return unknownParameter(f.key).response()
		}
	}
	return s.execute(c, func(time.Time) response {
		rec, ok := s.byID[id]
		if !ok {
			return noSuchCustomer("id", id).response()
		}
		c.rec.CustomerID = id
		if rec.c.Deleted {
			return response{status: http.StatusOK, body: deletedJSON(id)}
		}
		return jsonResponse(rec.c)
	})
}

func (s *Server) updateCustomer(c *call, id string) response {
	p, err := parseCustomerParams(c.fields)
	if err == nil {
		err = s.rejectEmail(p)
	}
	if err != nil {
		return err.response()
	}
	return s.execute(c, func(now time.Time) response {
		rec, ok := s.byID[id]
		if !ok || rec.c.Deleted {
			return noSuchCustomer("id", id).response()
		}
		c.rec.CustomerID = id
		upd := rec.c.clone()
		if err := p.apply(&upd); err != nil {
			return err.response()
		}
		if prev, changed := previousAttributes(rec.c, upd); changed {
			rec.c = upd
			s.emit(EventCustomerUpdated, upd, prev, c.origin(), now)
		}
		return jsonResponse(rec.c)
	})
}

func (s *Server) deleteCustomer(c *call, id string) response {
	if len(c.fields) > 0 {
		return unknownParameter(c.fields[0].key).response()
	}
	return s.execute(c, func(now time.Time) response {
		rec, ok := s.byID[id]
		if !ok || rec.c.Deleted {
			return noSuchCustomer("id", id).response()
		}
		c.rec.CustomerID = id
		s.emit(EventCustomerDeleted, rec.c, nil, c.origin(), now)
		rec.c.Deleted = true
		return response{status: http.StatusOK, body: deletedJSON(id)}
	})
}

func (s *Server) listCustomers(c *call) response {
	var p listParams
	var email *string
	for _, f := range c.fields {
		if ok, err := parseListField(&p, f); err != nil {
			return err.response()
		} else if ok {
			continue
		}
		switch {
		case f.root == "email" && len(f.path) == 0:
			v := f.last()
			email = &v
		case f.root == "test_clock":
			return invalidRequest("test_clock", "",
				"stripefake: parameter \"test_clock\" exists in the Stripe API but this fake does not implement it").response()
		default:
			return unknownParameter(f.key).response()
		}
	}
	return s.execute(c, func(time.Time) response {
		var items []*customerRecord
		for _, rec := range s.customers {
			if rec.c.Deleted || (email != nil && rec.c.Email != *email) || !p.created.match(rec.c.Created.Unix()) {
				continue
			}
			items = append(items, rec)
		}
		sortNewestFirst(items, (*customerRecord).key)
		cursor := func(id string) (sortKey, bool) {
			rec, ok := s.byID[id]
			if !ok {
				return sortKey{}, false
			}
			return rec.key(), true
		}
		recs, more, err := page(items, p, (*customerRecord).key, cursor, "customer")
		if err != nil {
			return err.response()
		}
		data := make([]Customer, len(recs))
		for i, rec := range recs {
			data[i] = rec.c
		}
		return listResponse("/v1/customers", data, more)
	})
}

// origin is the request a change made through c is attributed to in events.
func (c *call) origin() origin {
	return origin{requestID: c.rec.ID, idempotencyKey: c.rec.IdempotencyKey}
}

// insertCustomer stores a new customer. Call with s.mu held.
func (s *Server) insertCustomer(c Customer) {
	s.seq++
	rec := &customerRecord{c: c, seq: s.seq}
	s.customers = append(s.customers, rec)
	s.byID[c.ID] = rec
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns prefix followed by n random alphanumerics, like Stripe ids.
func newID(prefix string, n int) string {
	return prefix + randomString(idAlphabet, n)
}

// newInvoicePrefix returns a prefix like the ones Stripe assigns, "A1B2C3D4".
func newInvoicePrefix() string {
	return randomString("0123456789ABCDEF", 8)
}

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
