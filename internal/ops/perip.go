package ops

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// perIP holds the connection limits of the apps NewApp built, which Serve
// applies. (fasthttp's own Server.MaxConnsPerIP closes a connection twice
// when a shutdown meets an idle connection, and crashes; its Concurrency
// limit, kept as a backstop, answers without a trace.)
var perIP sync.Map // *fiber.App → perIPLimit

type perIPLimit struct {
	n     int // per address; 0: none
	total int
	log   *slog.Logger
	m     *HTTPMetrics
}

// LimitsFor are the Limits TANDEM_HTTP_MAX_CONNS and
// TANDEM_HTTP_MAX_CONNS_PER_IP ask for (a per-address limit of 0: none, as
// behind a proxy), with the default timeouts.
func LimitsFor(maxConns, maxConnsPerIP int) Limits {
	l := Limits{MaxConns: maxConns, MaxConnsPerIP: maxConnsPerIP}
	if maxConnsPerIP == 0 {
		l.MaxConnsPerIP = -1
	}
	return l
}

// Listener returns ln limited as app's Limits ask (MaxConns,
// MaxConnsPerIP), for app.Listener; Serve and ServeListener do it
// themselves. Refused
// connections are answered (503 beyond MaxConns, 429 beyond
// MaxConnsPerIP), closed, logged and counted.
func Listener(app *fiber.App, ln net.Listener) net.Listener {
	v, ok := perIP.Load(app)
	if !ok {
		return ln
	}
	l := v.(perIPLimit)
	return &limitListener{Listener: ln, limit: l, conns: map[string]int{}}
}

// limitListener refuses a connection beyond limit.total with a 503, and
// beyond limit.n from one address with a 429, and closes it.
type limitListener struct {
	net.Listener
	limit perIPLimit
	mu    sync.Mutex
	conns map[string]int
	open  int
	// logs samples the log lines of refusals, per status.
	logs [2]sampler
}

func refusal(status string, body string) string {
	return "HTTP/1.1 " + status + "\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
}

var (
	tooManyFromIP = refusal("429 Too Many Requests", "too many connections from this address\n")
	tooManyConns  = refusal("503 Service Unavailable", "too many connections\n")
)

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
		answer, code, why, kind := "", "", "", 0
		switch {
		case l.open >= l.limit.total:
			answer, code, why = tooManyConns, "503", "connection refused: too many connections"
		case l.limit.n > 0 && l.conns[ip] >= l.limit.n:
			answer, code, why, kind = tooManyFromIP, "429", "connection refused: too many from one address", 1
		default:
			l.conns[ip]++
			l.open++
		}
		l.mu.Unlock()
		if answer == "" {
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
		}
		if l.limit.m != nil {
			l.limit.m.requests.WithLabelValues("rejected", "other", code).Inc()
		}
		if l.limit.log != nil {
			if ok, left := l.logs[kind].allow(time.Now()); ok {
				l.limit.log.Warn(why, "per_address", l.limit.n, "total", l.limit.total, "left_out_since_last_line", left)
			}
		}
		go func() {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte(answer))
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
		c.l.open--
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
