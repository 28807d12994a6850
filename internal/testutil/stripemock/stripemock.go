// Package stripemock starts Stripe's own API mock, stripe-mock, for tests
// that check request shapes against Stripe's OpenAPI spec.
//
// stripe-mock validates every request (unknown or malformed parameters are a
// 400, as in Stripe) and answers with fixtures; it keeps no state, so an
// update or delete of any id succeeds and idempotency keys are ignored. Use a
// stateful fake for behaviour across calls.
//
// Install it with
//
//	go install github.com/stripe/stripe-mock@v0.203.0
//
// Start finds the binary through STRIPE_MOCK_BIN, then PATH, then $GOBIN or
// the first $GOPATH/bin. When it is missing the test is skipped, unless CI is
// set, when the test fails: CI must run these tests. STRIPE_MOCK_URL names an
// already running stripe-mock to use instead.
package stripemock

import (
	"bufio"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the stripe-mock release the tests are written against.
const Version = "v0.203.0"

// InstallCommand installs Version.
const InstallCommand = "go install github.com/stripe/stripe-mock@" + Version

const listening = "Listening for HTTP at address: "

// Start runs a stripe-mock for t on a free loopback port and returns its base
// URL (http://127.0.0.1:PORT), to use as STRIPE_API_BASE. The process is
// stopped when t ends. Each call starts its own process (about a second);
// share one URL between subtests where possible.
func Start(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("STRIPE_MOCK_URL"); u != "" {
		return strings.TrimRight(u, "/")
	}
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("stripemock: %v (CI is set, so this fails instead of skipping; install it with %s)", err, InstallCommand)
		}
		t.Skipf("stripemock: %v; skipping (install it with %s, or set STRIPE_MOCK_BIN)", err, InstallCommand)
	}

	// -https-addr too: with only -http-addr, stripe-mock also listens for
	// HTTPS on the fixed port 12112, which parallel tests would fight over.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("stripemock: pipe: %v", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("stripemock: starting %s: %v", bin, err)
	}
	w.Close() // the child holds its own copy

	var (
		mu     sync.Mutex
		output []string // for failure messages
		addr   = make(chan string, 1)
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			output = append(output, line)
			mu.Unlock()
			if a, ok := strings.CutPrefix(line, listening); ok {
				select {
				case addr <- strings.TrimSpace(a):
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-done
	})

	select {
	case a := <-addr:
		return "http://" + a
	case <-done:
	case <-time.After(30 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("stripemock: %s did not report its HTTP address; output:\n%s", bin, strings.Join(output, "\n"))
	return ""
}

// Binary returns the path of the stripe-mock binary, or an error saying where
// it looked.
func Binary() (string, error) {
	if p := os.Getenv("STRIPE_MOCK_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("STRIPE_MOCK_BIN %q: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if gopath := filepath.SplitList(build.Default.GOPATH); len(gopath) > 0 && gopath[0] != "" {
		dirs = append(dirs, filepath.Join(gopath[0], "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "stripe-mock")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("stripe-mock not found on PATH or in %s", strings.Join(dirs, ", "))
}
