package ops

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// perIP holds the per-address connection limit of the apps NewApp built,
// which Serve applies. (fasthttp's own Server.MaxConnsPerIP closes a
// connection twice when a shutdown meets an idle connection, and crashes.)
var perIP sync.Map // *fiber.App → perIPLimit

type perIPLimit struct {
	n   int
	log *slog.Logger
	m   *HTTPMetrics
}

// Listener returns ln limited as app's Limits ask (MaxConnsPerIP), for
// app.Listener; Serve does it itself.
func Listener(app *fiber.App, ln net.Listener) net.Listener {
	v, ok := perIP.Load(app)
	if !ok {
		return ln
	}
	l := v.(perIPLimit)
	return &limitListener{Listener: ln, limit: l, conns: map[string]int{}}
}

// limitListener refuses a connection beyond limit.n from one address with
// a 429 and closes it.
type limitListener struct {
	net.Listener
	limit perIPLimit
	mu    sync.Mutex
	conns map[string]int
}

const tooManyBody = "too many connections from this address\n"

var tooManyConns = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: " +
	strconv.Itoa(len(tooManyBody)) + "\r\nConnection: close\r\n\r\n" + tooManyBody

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		l.mu.Lock()
		ok := l.conns[ip] < l.limit.n
		if ok {
			l.conns[ip]++
		}
		l.mu.Unlock()
		if ok {
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
		}
		if l.limit.m != nil {
			l.limit.m.requests.WithLabelValues("rejected", "other", "429").Inc()
		}
		if l.limit.log != nil {
			l.limit.log.Warn("connection refused: too many from one address", "limit", l.limit.n)
		}
		go func() {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte(tooManyConns))
			_ = c.Close()
		}()
	}
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	ip   string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.ip]--; c.l.conns[c.ip] <= 0 {
			delete(c.l.conns, c.ip)
		}
		c.l.mu.Unlock()
	})
	return err
}

// CloseWrite closes the write side when the connection has one (TCP).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
