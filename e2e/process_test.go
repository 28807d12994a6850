package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/testutil"
)

// process is one Tandem command run as a separate OS process: started,
// health-checked, SIGKILLed, restarted and stopped by the test, its output
// kept for the failure report.
type process struct {
	name   string   // "api", "webhook", "worker-1"…
	path   string   // the binary
	args   []string // its arguments
	env    []string // its whole environment
	dir    string   // its working directory (empty: no configs/ to find)
	addr   string   // host:port of its /readyz
	out    *testutil.SyncBuffer
	starts int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd.Wait's result, once done
}

// freeAddr is testutil.FreeAddr.
func freeAddr(t testing.TB) string { return testutil.FreeAddr(t) }

// start launches the process and waits (within a deadline) until its
// /readyz answers 200. It fails t, with the process's log, if the process
// exits or never gets ready.
func (p *process) start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	if p.starts > 0 {
		fmt.Fprintf(p.out, "---- e2e: %s started again ----\n", p.name)
	}
	p.starts++
	cmd := exec.Command(p.path, p.args...)
	cmd.Env, cmd.Dir = p.env, p.dir
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		t.Fatalf("starting %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()

	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-done:
			t.Fatalf("%s exited during start-up (%v); its output:\n%s", p.name, p.exitErr(), p.out)
		default:
		}
		resp, err := client.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready on %s within 30 s (last error %v); its output:\n%s", p.name, p.addr, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// running reports whether the process is started and has not exited.
func (p *process) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to die; it returns the wait
// error (which names the signal).
func (p *process) kill(t testing.TB) error {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("killing %s: %v", p.name, err)
	}
	<-done
	fmt.Fprintf(p.out, "---- e2e: %s SIGKILLed ----\n", p.name)
	return p.exitErr()
}

// stop sends SIGTERM and waits up to timeout for a clean exit; it returns an
// error if the process did not exit 0 in time (it is SIGKILLed then).
func (p *process) stop(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if err := p.exitErr(); err != nil {
			return fmt.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, timeout)
	}
}

// warnLine matches the JSON log lines at WARN or ERROR level, and Go panics.
var warnLine = regexp.MustCompile(`"level":"(WARN|ERROR)"|^panic:|^fatal error:`)

// routineLine matches the access log lines of successful requests.
var routineLine = regexp.MustCompile(`"msg":"request".*"status":2\d\d`)

// report writes the whole log to a file in the temporary directory and
// returns a summary for the test log: where the file is, the warnings and
// errors (at most 30) and the last 40 lines that are not access logs of
// successful requests.
func (p *process) report(testName string) string {
	text := p.out.String()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	safe := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(testName, "_")
	file := filepath.Join(os.TempDir(), fmt.Sprintf("tandem-e2e-%s-%s.log", safe, p.name))
	where := file
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		where = "not saved: " + err.Error()
	}
	var warns []string
	for _, l := range lines {
		if warnLine.MatchString(l) {
			warns = append(warns, l)
		}
	}
	if len(warns) > 30 {
		warns = append(append(warns[:15:15], fmt.Sprintf("… %d more …", len(warns)-30)), warns[len(warns)-15:]...)
	}
	var tail []string
	for _, l := range lines {
		if !routineLine.MatchString(l) {
			tail = append(tail, l)
		}
	}
	if len(tail) > 40 {
		tail = tail[len(tail)-40:]
	}
	return fmt.Sprintf("==== %s: %d log lines (whole log: %s)\n-- warnings and errors:\n%s\n-- last lines:\n%s",
		p.name, len(lines), where, strings.Join(warns, "\n"), strings.Join(tail, "\n"))
}

// waitFor polls cond every interval until it returns true or ctx ends; it
// returns ctx's error then.
func waitFor(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
