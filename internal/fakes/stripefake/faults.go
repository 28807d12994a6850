package stripefake

import (
	"math"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Fault names a failure the fake injected instead of serving a request.
type Fault string

// Faults recorded in Request.Fault.
const (
	FaultNone Fault = ""
	// FaultRateLimit is a 429 injected by Faults.RateLimitRatio.
	FaultRateLimit Fault = "rate_limit"
	// FaultServerError is a 500 injected by Faults.ServerErrorRatio.
	FaultServerError Fault = "server_error"
	// FaultRateLimitExceeded is a 429 from the hard limit set by SetRateLimit.
	FaultRateLimitExceeded Fault = "rate_limit_exceeded"
	// FaultServerErrorAfterWrite is a 500 answered after the write was
	// made (FailAfterWrite), and saved under the request's idempotency key.
	FaultServerErrorAfterWrite Fault = "server_error_after_write"
)

// FailAfterWrite makes the next n successful writes (POST and DELETE) answer
// 500 api_error after they took effect, as Stripe may: the answer is saved
// under the request's Idempotency-Key like any other, so a retry with the
// same key replays the 500 for as long as the key is kept (24 h).
func (s *Server) FailAfterWrite(n int) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.failAfterWrite = n
}

func (s *Server) takeFailAfterWrite() bool {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.failAfterWrite <= 0 {
		return false
	}
	s.failAfterWrite--
	return true
}

// ExpireIdempotencyKeys forgets every stored idempotency key, as Stripe does
// 24 hours after a key's first use.
func (s *Server) ExpireIdempotencyKeys() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.idem {
		if !e.inFlight {
			delete(s.idem, k)
		}
	}
}

// Faults are failures injected into API requests. Injected failures answer
// before the request reaches its endpoint: they change nothing and store no
// idempotent result, so a retry with the same Idempotency-Key proceeds
// normally.
type Faults struct {
	// RateLimitRatio is the share of requests (0 to 1) answered 429
	// rate_limit.
	RateLimitRatio float64
	// ServerErrorRatio is the share of requests (0 to 1) answered 500
	// api_error.
	ServerErrorRatio float64
	// Latency delays every request that reaches its endpoint, after its
	// Idempotency-Key is claimed and before it runs. The request runs even
	// if the client gave up meanwhile, which is how to simulate "Stripe
	// committed but the response was lost"; a retry with the same key
	// during the delay gets 409.
	Latency time.Duration
	// RejectEmailDomain, if set, answers 400 email_invalid to every create
	// and update whose email is at this domain, as Stripe does for an
	// address it will not take: a permanent failure (the request changes
	// nothing and stores no idempotent result).
	RejectEmailDomain string
}

// rejectEmail is the refusal of an email at Faults.RejectEmailDomain.
func (s *Server) rejectEmail(p customerParams) *apiError {
	s.fmu.Lock()
	domain := s.faults.RejectEmailDomain
	s.fmu.Unlock()
	if domain == "" || p.email == nil || !strings.HasSuffix(strings.ToLower(*p.email), "@"+strings.ToLower(domain)) {
		return nil
	}
	return invalidRequest("email", codeEmailInvalid, "Invalid email address: %s (this sandbox refuses the domain %s)", *p.email, domain)
}

// SetFaults replaces the injected faults; the zero Faults turns them off.
// Which requests fail is drawn from the generator seeded by Options.Seed.
func (s *Server) SetFaults(f Faults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f
}

// SetRateLimit enforces a hard limit of perSecond requests per second with a
// token bucket holding one second's worth of requests plus one token of slack
// for network jitter; requests over it get 429 rate_limit and are counted in
// Stats().RateLimitRejections. perSecond <= 0 removes the limit.
func (s *Server) SetRateLimit(perSecond float64) {
	burst := 0
	if perSecond > 0 {
		burst = int(math.Ceil(perSecond)) + 1
	}
	s.SetRateLimitBurst(perSecond, burst)
}

// SetRateLimitBurst is SetRateLimit with an explicit bucket size (at least 1).
func (s *Server) SetRateLimitBurst(perSecond float64, burst int) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if perSecond <= 0 {
		s.limiter = nil
		return
	}
	s.limiter = rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
}

// RateLimitRejections returns how many requests the hard limit of
// SetRateLimit has refused so far.
func (s *Server) RateLimitRejections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.RateLimitRejections
}

// fault decides whether a request is refused before it reaches its endpoint.
func (s *Server) fault() Fault {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.limiter != nil && !s.limiter.Allow() {
		return FaultRateLimitExceeded
	}
	f := s.faults
	if f.RateLimitRatio <= 0 && f.ServerErrorRatio <= 0 {
		return FaultNone
	}
	switch r := s.rng.Float64(); {
	case r < f.RateLimitRatio:
		return FaultRateLimit
	case r < f.RateLimitRatio+f.ServerErrorRatio:
		return FaultServerError
	}
	return FaultNone
}

// sleepLatency waits out the injected latency. It returns false if the
// Server was closed meanwhile.
func (s *Server) sleepLatency() bool {
	s.fmu.Lock()
	d := s.faults.Latency
	s.fmu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}
