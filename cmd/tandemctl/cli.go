package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
)

// Exit codes (DESIGN §9).
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one tandemctl subcommand. setup declares the command's flags on
// fs (which already has -json) and returns the function that runs it once
// the flags are parsed.
type command struct {
	name    string
	args    string // the synopsis after the name, e.g. "-provider P [-dry-run]"
	summary string
	setup   func(fs *flag.FlagSet) func(ctx context.Context, e *env) error
}

// commands is the list of tandemctl's commands, in the order help shows them.
func commands() []command {
	return []command{
		// One line per command; each lives in its own file.
		importCommand(),
		backfillCommand(),
		reconcileCommand(),
		statusCommand(),
		dlqCommand(),
		resyncCommand(),
	}
}

// usageError is bad usage: exit 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// usagef reports bad usage (exit 2) with one line.
func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// env is what a command runs with: the configuration, the parsed flags'
// positional arguments, the output streams, and lazily opened connections
// that run closes afterwards.
type env struct {
	cfg       *config.Config
	providers *factory.Registry
	args      []string // positional arguments after the flags
	json      bool     // -json: one JSON document on stdout
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	log       *slog.Logger // JSON lines on stderr, at TANDEM_LOG_LEVEL

	st      *store.Store
	conn    *broker.Conn
	pub     *broker.Publisher
	closers []func()
}

// run runs one tandemctl invocation and returns its exit code.
func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "tandemctl: unknown command %q (run tandemctl help)\n", args[0])
		return exitUsage
	}
	fs := flag.NewFlagSet("tandemctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON document on stdout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tandemctl %s %s\n%s\n\nflags:\n", cmd.name, cmd.args, cmd.summary)
		fs.PrintDefaults()
	}
	exec := cmd.setup(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // the flag package printed the line and the usage
	}

	providers := factory.New()
	cfg, err := config.Load(environ, providers.Names())
	if err != nil {
		fmt.Fprintln(stderr, "tandemctl:", oneLine(err))
		return exitError
	}
	e := &env{
		cfg: cfg, providers: providers, args: fs.Args(), json: *asJSON,
		stdin: stdin, stdout: stdout, stderr: stderr,
		log: ops.NewLogger(stderr, cfg.LogLevel).With("process", "tandemctl", "command", cmd.name),
	}
	defer e.close()
	if err := exec(ctx, e); err != nil {
		fmt.Fprintf(stderr, "tandemctl %s: %s\n", cmd.name, oneLine(err))
		var u usageError
		if errors.As(err, &u) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tandemctl <command> [flags] [args]")
	fmt.Fprintln(w, "\nTandem's operator tool. It reads configs/tandem.yaml and the environment like the processes.")
	fmt.Fprintln(w, "Every command takes -json (one JSON document on stdout). Exit: 0 ok, 1 error, 2 bad usage.")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n             %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nRun tandemctl <command> -h for a command's flags.")
}

// oneLine keeps an error message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// close releases what the command opened, last opened first.
func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// store opens the MySQL store once. tandemctl never migrates: the schema
// belongs to the api (or the chart's migration job).
func (e *env) store(ctx context.Context) (*store.Store, error) {
	if e.st != nil {
		return e.st, nil
	}
	st, err := store.Open(ctx, e.cfg.MySQLDSN, store.Options{History: store.HistoryOptions{Off: !e.cfg.History}})
	if err != nil {
		return nil, err
	}
	e.st = st
	e.closers = append(e.closers, func() { st.Close() })
	return st, nil
}

// provider builds the adapter of an enabled provider, undecorated (so its
// optional interfaces show), or a usage error naming the known ones.
func (e *env) provider(name string) (integrations.Provider, error) {
	if name == "" {
		return nil, usagef("-provider is required (known: %s)", strings.Join(e.providers.Names(), ", "))
	}
	known := false
	for _, n := range e.providers.Names() {
		known = known || n == name
	}
	if !known {
		return nil, usagef("unknown provider %q (known: %s)", name, strings.Join(e.providers.Names(), ", "))
	}
	return e.providers.Build(name, e.cfg, factory.Deps{Logger: e.log})
}

// terminal reports whether stderr is a terminal (progress bars go there).
func (e *env) terminal() bool {
	f, ok := e.stderr.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progressBar is what commands do with a progress bar.
type progressBar interface {
	Add(n int) error
	Set(n int) error
	Finish() error
}

// quietBar is the progress bar off a terminal: nothing at all (the
// library's silent bar still runs a goroutine of its own).
type quietBar struct{}

func (quietBar) Add(int) error { return nil }
func (quietBar) Set(int) error { return nil }
func (quietBar) Finish() error { return nil }

// progress returns a progress bar with an ETA on stderr when it is a
// terminal, and one that shows nothing otherwise (a script, a pipe, a
// test). total -1 means unknown. Use it from one goroutine. On a terminal
// the spinner of an unknown total turns on each update: progressbar's own
// spinner goroutine reads the bar without its lock (a data race).
func (e *env) progress(total int64, desc string) progressBar {
	if !e.terminal() {
		return quietBar{}
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("users"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100_000_000), // 100ms
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.stderr) }),
		progressbar.OptionClearOnFinish(),
	)
}

// result prints doc as one JSON document with -json, or calls human to
// print the summary for a person.
func (e *env) result(doc any, human func(w io.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	human(e.stdout)
	return nil
}
