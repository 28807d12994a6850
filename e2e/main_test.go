package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-sync/tandem/internal/bench"
)

// binDir holds the binaries TestMain built: api, webhook, worker.
var binDir string

// TestMain builds the commands once for every test of the package.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		dir, err := bench.BuildCommands(context.Background())
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

// bin is the path of a built command.
func bin(name string) string { return filepath.Join(binDir, name) }

// skipShort skips t in -short mode (TestMain built nothing then).
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
}
