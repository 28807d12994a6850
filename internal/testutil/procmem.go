package testutil

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RSS returns this process's resident set size in bytes (VmRSS of
// /proc/self/status).
func RSS(t testing.TB) int64 {
	t.Helper()
	return status(t, "VmRSS:")
}

// ResetPeakRSS resets this process's peak resident set size (VmHWM), so
// that PeakRSS reports the peak from now on.
func ResetPeakRSS(t testing.TB) {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// PeakRSS returns this process's peak resident set size in bytes (VmHWM)
// since the start or the last ResetPeakRSS.
func PeakRSS(t testing.TB) int64 {
	t.Helper()
	return status(t, "VmHWM:")
}

func status(t testing.TB, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// WaitReadByServer blocks until every established connection accepted on
// addr (a listener of this host) has nothing left unread in its receive
// queue: the server has read everything its clients sent so far. It fails
// t after a minute. It reads /proc/net/tcp and /proc/net/tcp6.
func WaitReadByServer(t testing.TB, addr string) {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	port, _ := strconv.Atoi(p)
	suffix := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(time.Minute)
	for {
		pending := 0
		for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n")[1:] {
				f := strings.Fields(line)
				// sl local rem st tx_queue:rx_queue …; 01 = ESTABLISHED
				if len(f) < 5 || !strings.HasSuffix(f[1], suffix) || f[3] != "01" {
					continue
				}
				if _, rx, _ := strings.Cut(f[4], ":"); strings.Trim(rx, "0") != "" {
					pending++
				}
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to %s still hold unread bytes after a minute", pending, addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Heap returns the bytes of Go heap spans in use (runtime.MemStats
// HeapInuse) after a collection: what the process holds on to, whether or
// not the kernel has backed all of it yet (a fresh large buffer counts
// here before its pages are touched and show in RSS).
func Heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
