// Package httpclient builds the HTTP clients Tandem's adapters (and the
// fakes' webhook senders) use when they are given none.
package httpclient

import (
	"net/http"
	"time"
)

// IdlePerHost is how many idle connections a client keeps per host: about
// as many requests as a process sends to one host at once (a worker's
// pushes in flight, a fake's deliveries).
const IdlePerHost = 256

// New returns a client with timeout and net/http's default transport
// settings, except that it keeps up to IdlePerHost idle connections per
// host. net/http keeps 2: a worker with 32 pushes in flight then opens a
// connection for most requests (a TCP, and in production a TLS, handshake
// each) and leaves the closed ones in TIME_WAIT. Idle connections are
// closed after the default 90 s.
func New(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * IdlePerHost
	t.MaxIdleConnsPerHost = IdlePerHost
	return &http.Client{Transport: t, Timeout: timeout}
}
