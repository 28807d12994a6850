package container

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-sync/tandem/internal/testutil"
)

// daemon is a Docker daemon of one test: its data, state and socket live in
// a temporary directory, it sets up no iptables rules and no bridge (the
// containers use the host network), and it is stopped and its directory
// removed when the test ends.
type daemon struct {
	dir    string // the temporary directory
	host   string // DOCKER_HOST: unix://<dir>/docker.sock
	docker string // the docker client
	cmd    *exec.Cmd
	done   chan struct{}
	log    *testutil.SyncBuffer
}

// startDaemon starts dockerd for tb and waits until it answers. It fails tb,
// saying why, when Docker is missing or cannot start.
func startDaemon(tb testing.TB) *daemon {
	tb.Helper()
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		tb.Fatalf("dockerd not found (%v): install Debian's docker.io (`make test` does it, scripts/docker.sh)", err)
	}
	docker := dockerClient(dockerd)
	if os.Geteuid() != 0 {
		tb.Fatalf("the container test starts its own Docker daemon, which needs root (running as uid %d)", os.Geteuid())
	}
	// A short path: a unix socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "tandem-dockerd-")
	if err != nil {
		tb.Fatalf("docker: %v", err)
	}
	d := &daemon{dir: dir, host: "unix://" + filepath.Join(dir, "docker.sock"), docker: docker,
		done: make(chan struct{}), log: &testutil.SyncBuffer{}}
	d.cmd = exec.Command(dockerd,
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", d.host, "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	// A test binary that dies (a timeout's panic) stops its daemon too.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		tb.Fatalf("starting dockerd: %v", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	tb.Cleanup(func() { d.stop(tb) })

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", filepath.Join(dir, "docker.sock"))
		}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-d.done:
			tb.Fatalf("dockerd exited during start-up (%v); its log:\n%s", d.cmd.ProcessState, d.log)
		default:
		}
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("dockerd did not answer on %s within 60 s (last error %v); its log:\n%s", d.host, err, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dockerClient returns the docker client installed with dockerd (Debian's
// docker.io puts it in /usr/bin), else the first docker on PATH.
func dockerClient(dockerd string) string {
	for _, dir := range []string{filepath.Dir(dockerd), "/usr/bin"} {
		if p := filepath.Join(dir, "docker"); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath("docker"); err == nil {
		return p
	}
	return "docker"
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// stop removes every container, stops the daemon (SIGTERM, then SIGKILL
// after 20 s), unmounts what it left mounted under its directory (the
// network namespace it bind-mounts at <exec-root>/netns/default, container
// layers of a daemon that was killed), then removes the directory.
func (d *daemon) stop(tb testing.TB) {
	tb.Helper()
	select {
	case <-d.done:
	default:
		if ids, err := d.output(context.Background(), "ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
			_, _ = d.output(context.Background(), append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			tb.Errorf("dockerd did not stop within 20 s of SIGTERM; killing it")
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	for _, m := range mountsUnder(d.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			tb.Errorf("unmounting %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		tb.Errorf("removing the daemon's directory: %v", err)
	}
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			ms = append(ms, fields[4])
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// output runs the docker client against the daemon and returns its
// standard output; the error carries its standard error.
func (d *daemon) output(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.docker, args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_BUILDKIT=0", "DOCKER_CONFIG="+filepath.Join(d.dir, "client"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// must is output that fails tb on error.
func (d *daemon) must(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := d.output(context.Background(), args...)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// buildImage builds the image with scripts/image.sh (what `make image`
// runs) and returns its tag.
func (d *daemon) buildImage(tb testing.TB) string {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	tag := "tandem-test:" + testutil.Suffix()
	cmd := exec.Command(filepath.Join(root, "scripts", "image.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "IMAGE="+tag, "DOCKER="+d.docker, "DOCKER_HOST="+d.host,
		"DOCKER_CONFIG="+filepath.Join(d.dir, "client"))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	return tag
}

// container is one Tandem process run from the image.
type container struct {
	d    *daemon
	name string
	id   string
}

// hardened are the docker run options that match the chart's
// securityContext: a non-root numeric user (the image's), a read-only root
// filesystem, every capability dropped, no privilege escalation.
var hardened = []string{"--network", "host", "--read-only", "--cap-drop", "ALL",
	"--security-opt", "no-new-privileges", "--user", "65532:65532"}

// run starts a detached container named name from image with the docker
// run options opts (its environment, its volumes) and the command args.
func (d *daemon) run(tb testing.TB, name, image string, opts []string, args ...string) *container {
	tb.Helper()
	full := append(append([]string{"run", "-d", "--name", name}, opts...), hardened...)
	full = append(append(full, image), args...)
	c := &container{d: d, name: name, id: d.must(tb, full...)}
	return c
}

// runToEnd runs a container to its end and fails tb, with its output, unless
// it exits 0.
func (d *daemon) runToEnd(tb testing.TB, name, image string, opts []string, args ...string) {
	tb.Helper()
	full := append(append([]string{"run", "--name", name}, opts...), hardened...)
	full = append(append(full, image), args...)
	if out, err := d.output(context.Background(), full...); err != nil {
		logs, _ := d.output(context.Background(), "logs", name)
		tb.Fatalf("%v\n%s%s", err, out, logs)
	}
}

// waitReady polls http://addr/readyz until it answers 200; it fails tb, with
// the container's log, if the container exits or is not ready within 60 s.
func (c *container) waitReady(tb testing.TB, addr string) {
	tb.Helper()
	start := time.Now()
	client := &http.Client{Timeout: time.Second}
	for i := 0; ; i++ {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		// Asking the daemon takes longer than a poll: every half second.
		if i%25 != 24 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if state := c.d.must(tb, "inspect", "-f", "{{.State.Status}}", c.id); state != "running" {
			tb.Fatalf("container %s is %s, not running; its log:\n%s", c.name, state, c.logs())
		}
		if time.Since(start) > 60*time.Second {
			tb.Fatalf("container %s not ready on %s within 60 s (last error %v); its log:\n%s", c.name, addr, err, c.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logs returns the container's output.
func (c *container) logs() string {
	out, err := c.d.output(context.Background(), "logs", c.id)
	if err != nil {
		return err.Error()
	}
	return out
}

// pid is the container's main process as this machine sees it.
func (c *container) pid(tb testing.TB) int {
	tb.Helper()
	p, err := strconv.Atoi(c.d.must(tb, "inspect", "-f", "{{.State.Pid}}", c.id))
	if err != nil || p <= 0 {
		tb.Fatalf("container %s: no process (%v)", c.name, err)
	}
	return p
}

// stop sends SIGTERM (docker stop) and returns an error unless the process
// exited 0 within its shutdown deadline.
func (c *container) stop() error {
	if _, err := c.d.output(context.Background(), "stop", "-t", "25", c.id); err != nil {
		return err
	}
	code, err := c.d.output(context.Background(), "inspect", "-f", "{{.State.ExitCode}}", c.id)
	if err != nil {
		return err
	}
	if strings.TrimSpace(code) != "0" {
		return fmt.Errorf("container %s exited with %s after SIGTERM; its log:\n%s", c.name, strings.TrimSpace(code), c.logs())
	}
	return nil
}
