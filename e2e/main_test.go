package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the binaries TestMain built: api, webhook, worker.
var binDir string

// TestMain builds the commands once for every test of the package.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		dir, err := buildCommands()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the commands:", err)
			os.Exit(1)
		}
		binDir = dir
	}
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildCommands runs `go build` on cmd/api, cmd/webhook and cmd/worker into
// a new temporary directory and returns it.
func buildCommands() (string, error) {
	dir, err := os.MkdirTemp("", "tandem-e2e-bin-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/webhook", "./cmd/worker")
	cmd.Dir = ".." // the module root; tests run in e2e/
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	return dir, nil
}

// bin is the path of a built command.
func bin(name string) string { return filepath.Join(binDir, name) }

// skipShort skips t in -short mode (TestMain built nothing then).
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
}
