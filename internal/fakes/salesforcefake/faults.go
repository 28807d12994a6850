package salesforcefake

import (
	"net/http"
	"time"
)

// Fault names a failure the fake injected instead of serving a request.
type Fault string

// Faults recorded in Request.Fault.
const (
	FaultNone Fault = ""
	// FaultRequestLimit is a 403 REQUEST_LIMIT_EXCEEDED injected by
	// Faults.RequestLimitRatio.
	FaultRequestLimit Fault = "request_limit"
	// FaultServerError is a 500 UNKNOWN_EXCEPTION injected by
	// Faults.ServerErrorRatio.
	FaultServerError Fault = "server_error"
	// FaultUnavailable is a 503 SERVER_UNAVAILABLE injected by
	// Faults.UnavailableRatio.
	FaultUnavailable Fault = "unavailable"
)

const codeRequestLimit = "REQUEST_LIMIT_EXCEEDED"

func (f Fault) response() response {
	switch f {
	case FaultRequestLimit:
		return errorResponse(http.StatusForbidden, codeRequestLimit, "TotalRequests Limit exceeded.")
	case FaultUnavailable:
		return errorResponse(http.StatusServiceUnavailable, "SERVER_UNAVAILABLE",
			"Server temporarily unavailable. Please try again later.")
	default:
		return errorResponse(http.StatusInternalServerError, "UNKNOWN_EXCEPTION",
			"An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)")
	}
}

// Faults are failures injected into authenticated API requests (the token
// endpoint is never faulted). Injected failures answer before the request
// reaches its resource: they change nothing.
type Faults struct {
	// RequestLimitRatio is the share of requests (0 to 1) answered 403
	// REQUEST_LIMIT_EXCEEDED.
	RequestLimitRatio float64
	// ServerErrorRatio is the share answered 500 UNKNOWN_EXCEPTION.
	ServerErrorRatio float64
	// UnavailableRatio is the share answered 503 SERVER_UNAVAILABLE.
	UnavailableRatio float64
	// Latency delays every request that reaches its resource, before it
	// runs. The request runs even if the client gave up meanwhile, which
	// is how to simulate "Salesforce committed but the answer was lost".
	Latency time.Duration
}

// SetFaults replaces the injected faults; the zero Faults turns them off.
// Which requests fail is drawn from the generator seeded by Options.Seed.
func (s *Server) SetFaults(f Faults) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f
}

// fault decides whether a request is refused before it reaches its resource.
func (s *Server) fault() Fault {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := s.faults
	if f.RequestLimitRatio <= 0 && f.ServerErrorRatio <= 0 && f.UnavailableRatio <= 0 {
		return FaultNone
	}
	switch r := s.rng.Float64(); {
	case r < f.RequestLimitRatio:
		return FaultRequestLimit
	case r < f.RequestLimitRatio+f.ServerErrorRatio:
		return FaultServerError
	case r < f.RequestLimitRatio+f.ServerErrorRatio+f.UnavailableRatio:
		return FaultUnavailable
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
