package tcpproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandem-sync/tandem/internal/testutil/tcpproxy"
)

// echoServer accepts connections and echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestProxyForwards(t *testing.T) {
	t.Parallel()
	p := tcpproxy.New(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, "hello")
	require.NoError(t, err)
	require.Equal(t, "hello\n", got)
	require.Equal(t, 1, p.Accepted())
}

func TestCutClosesLiveAndNewConnectionsUntilRestore(t *testing.T) {
	t.Parallel()
	p := tcpproxy.New(t, echoServer(t))

	live, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer live.Close()
	_, err = roundTrip(live, "before")
	require.NoError(t, err)

	p.Cut()
	// The live connection is closed by the proxy: reads end, they don't hang.
	require.NoError(t, live.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = bufio.NewReader(live).ReadString('\n')
	require.Error(t, err)
	var ne net.Error
	if errors.As(err, &ne) {
		require.False(t, ne.Timeout(), "the proxy must close the connection, not leave it hanging")
	}

	// A new connection is accepted by the kernel but closed at once.
	during, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer during.Close()
	_, err = roundTrip(during, "during")
	require.Error(t, err)

	p.Restore()
	after, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer after.Close()
	got, err := roundTrip(after, "after")
	require.NoError(t, err)
	require.Equal(t, "after\n", got)
	require.Equal(t, 2, p.Accepted(), "the connection refused while cut is not counted")
}
