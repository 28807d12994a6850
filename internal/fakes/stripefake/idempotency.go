package stripefake

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"
)

// idempotencyTTL is how long Stripe keeps an idempotency key.
const idempotencyTTL = 24 * time.Hour

// idemEntry is one idempotency key: in flight, or holding the stored result.
type idemEntry struct {
	endpoint    string
	fingerprint string
	created     time.Time
	inFlight    bool
	resp        response
	requestID   string
	customerID  string
}

// claimKey looks key up for call c. It either claims the key (done false,
// entry returned) or answers the request itself: a replay of the stored
// result, 409 while the key is in flight, 400 when the key was used for
// another endpoint or other parameters. Call with s.mu held.
func (s *Server) claimKey(c *call, key string) (resp response, entry *idemEntry, done bool) {
	now := s.now()
	if len(s.idem) > 0 && len(s.idem)%1024 == 0 {
		for k, e := range s.idem {
			if !e.inFlight && now.Sub(e.created) >= idempotencyTTL {
				delete(s.idem, k)
			}
		}
	}
	fp := c.rec.Params.Encode()
	e, ok := s.idem[key]
	if ok && !e.inFlight && now.Sub(e.created) >= idempotencyTTL {
		delete(s.idem, key)
		ok = false
	}
	if !ok {
		s.boundIdempotency()
		e = &idemEntry{endpoint: c.endpoint, fingerprint: fp, created: now, inFlight: true}
		s.idem[key] = e
		return response{}, e, false
	}
	switch {
	case e.inFlight:
		return (&apiError{
			status: http.StatusConflict,
			Type:   errTypeIdempotency,
			Code:   codeIdempotencyKeyInUse,
			Message: fmt.Sprintf("There is currently another in-progress request using this Idempotent Key "+
				"(that probably means you submitted twice, and the other request is still going through): %s. "+
				"Please try again later.", key),
		}).response(), nil, true
	case e.endpoint != c.endpoint:
		return (&apiError{
			status: http.StatusBadRequest,
			Type:   errTypeIdempotency,
			Message: fmt.Sprintf("Keys for idempotent requests can only be used for the same endpoint they "+
				"were first used for ('%s' vs '%s'). Try using a key other than '%s' if you meant to execute "+
				"a different request.", e.endpoint, c.endpoint, key),
		}).response(), nil, true
	case e.fingerprint != fp:
		return (&apiError{
			status: http.StatusBadRequest,
			Type:   errTypeIdempotency,
			Message: fmt.Sprintf("Keys for idempotent requests can only be used with the same parameters "+
				"they were first used with. Try using a key other than '%s' if you meant to execute a "+
				"different request.", key),
		}).response(), nil, true
	}
	c.rec.Replayed = true
	c.rec.CustomerID = e.customerID
	s.stats.IdempotentReplays++
	resp = e.resp
	resp.header = maps.Clone(resp.header)
	if resp.header == nil {
		resp.header = http.Header{}
	}
	resp.header.Set("Idempotent-Replayed", "true")
	resp.header.Set("Original-Request", e.requestID)
	return resp, nil, true
}

// releaseKey forgets a claimed key whose request stored no result. Call with
// s.mu held.
func (s *Server) releaseKey(key string, e *idemEntry) {
	if s.idem[key] == e {
		delete(s.idem, key)
	}
}

// boundIdempotency makes room for one more key when the store holds
// Options.MaxIdempotencyKeys: it forgets the oldest quarter of the keys not
// in flight (Stripe keeps keys 24 h; a bounded fake forgets them sooner).
// Call with s.mu held.
func (s *Server) boundIdempotency() {
	max := s.limits.MaxIdempotencyKeys
	if max <= 0 || len(s.idem) < max {
		return
	}
	type aged struct {
		key     string
		created time.Time
	}
	var done []aged
	for k, e := range s.idem {
		if !e.inFlight {
			done = append(done, aged{k, e.created})
		}
	}
	slices.SortFunc(done, func(a, b aged) int { return a.created.Compare(b.created) })
	for _, a := range done[:min(len(done), max/4+1)] {
		delete(s.idem, a.key)
	}
}
