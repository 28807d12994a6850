package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// for a process the test starts. The port is drawn at random below Linux's
// ephemeral range (32768 and up): a port taken with ":0" comes from that
// range, where every outgoing connection of the machine (and every other
// test's ":0" listener) also takes its port, so under a busy parallel suite
// it is often in use again by the time the process binds it.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	tb.Fatalf("no free port found below the ephemeral range")
	return ""
}
