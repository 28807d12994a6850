// Package tcpproxy is a TCP proxy for tests: it forwards connections to a
// target address and can cut them on demand, to simulate a broker or database
// outage without touching the shared servers.
//
//	p := tcpproxy.New(t, "127.0.0.1:5672")
//	url := "amqp://guest:guest@" + p.Addr() + "/vhost"
//	p.Cut()     // every live connection is closed; new ones are closed at once
//	p.Restore() // connections are forwarded again
//
// The proxy listens on 127.0.0.1 on a free port and is closed when the test
// ends.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from Addr to a target. It is safe for
// concurrent use.
type Proxy struct {
	target string
	ln     net.Listener

	mu       sync.Mutex
	cut      bool
	closed   bool
	conns    map[net.Conn]struct{}
	accepted int

	wg sync.WaitGroup
}

// New starts a proxy to target (host:port) listening on 127.0.0.1:0. It fails
// t if it cannot listen; it is closed by t.Cleanup.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpproxy: listening: %v", err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the host:port clients should dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every live connection (both sides) and closes new connections as
// soon as they are accepted, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore forwards new connections again after Cut. Connections closed by Cut
// stay closed: clients must reconnect.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Accepted is the number of client connections forwarded to the target so far
// (connections refused while cut are not counted).
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary accept errors (EMFILE and the like): try again shortly.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		if p.cut || p.closed {
			p.mu.Unlock()
			client.Close()
			continue
		}
		p.accepted++
		p.conns[client] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.forward(client)
	}
}

// forward dials the target for client and copies bytes both ways until
// either side closes or the proxy is cut.
func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer p.drop(client)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer p.drop(server)
	if !p.track(server) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Closing both ends makes the other copy return too.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// track registers c unless the proxy was cut meanwhile.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
