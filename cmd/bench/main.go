// Command bench measures Tandem's stages against raw ceilings measured in the
// same run and prints one markdown table (see `make bench`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-sync/tandem/internal/bench"
	"github.com/tandem-sync/tandem/internal/bench/relaybench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == sandboxChild {
		// The pipeline stage's Stripe sandbox, as a process of its own.
		if err := bench.ServeSandboxChild(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench sandbox:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// sandboxChild is the first argument that makes the program serve the
// pipeline stage's sandbox instead.
const sandboxChild = "-sandbox-child"

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	dsn := fs.String("mysql", envOr("TANDEM_BENCH_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/"), "MySQL server DSN (its database name is replaced)")
	amqpURL := fs.String("amqp", envOr("TANDEM_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ server (a scratch vhost is created per stage)")
	mgmt := fs.String("rabbit-api", envOr("TANDEM_BENCH_RABBIT_API", "http://guest:guest@127.0.0.1:15672"), "RabbitMQ management API")
	stages := fs.String("stages", "api,relay,worker,webhook,catchup,processes,import,backfill,reconcile,ops,pipeline", "comma-separated stages to run")
	conc := fs.String("c", "32,64", "comma-separated concurrencies for the API stage")
	dur := fs.Duration("duration", 5*time.Second, "measured time per API run")
	warm := fs.Duration("warmup", time.Second, "warm-up before each measured API run")
	messages := fs.Int("messages", 0, "messages for the relay (default 50,000) and worker (default 3,000) stages")
	backfillUsers := fs.Int("backfill-users", 20000, "users of the backfill stage")
	opsRounds := fs.Int("ops-rounds", 3, "alternating rounds of each comparison of the ops stage")
	rates := fs.String("rates", "100,200,400,600,800", "pipeline stage: offered creates/s, rising")
	mixRate := fs.Int("mix-rate", 400, "pipeline stage: offered changes/s of the step with half PATCHes (0: none)")
	step := fs.Duration("step", 8*time.Second, "pipeline stage: how long each rate is offered")
	linkByEmail := fs.Bool("link-by-email", true, "pipeline stage: the worker's TANDEM_LINK_BY_EMAIL")
	workerConc := fs.Int("worker-concurrency", 0, "pipeline stage: the worker's TANDEM_WORKER_CONCURRENCY (prefetch twice it; 0: Tandem's default)")
	climb := fs.Bool("keep-climbing", false, "pipeline stage: run every rate even after one is not sustained")
	repeat := fs.Int("repeat", 1, "pipeline stage: run the rates this many times, each with fresh processes, database and vhost, and summarise")
	profileDir := fs.String("pipeline-profiles", "", "pipeline stage: save CPU profiles of the api, worker and webhook over each step in this directory")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var cs []int
	for _, s := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("-c %q: want positive integers", *conc)
		}
		cs = append(cs, n)
	}
	want := strings.Split(*stages, ",")
	host, _ := os.Hostname()
	fmt.Printf("# Tandem benchmark\n\n%s, host %s, %d CPUs, %s, `go run ./cmd/bench %s`\n\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.Version(), strings.Join(args, " "))

	var rows []bench.Row
	if slices.Contains(want, "api") {
		vhost, drop, err := bench.Vhost(*mgmt, *amqpURL)
		if err != nil {
			return err
		}
		r, err := bench.APIWrites(ctx, bench.APIOptions{MySQLDSN: *dsn, AMQPURL: vhost, Concurrency: cs, Warmup: *warm, Duration: *dur, Log: os.Stderr})
		drop()
		if err != nil {
			return err
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "relay") {
		r, err := relayStage(ctx, *dsn, *amqpURL, *mgmt, *messages)
		if err != nil {
			return fmt.Errorf("relay stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "worker") {
		vhost, drop, err := bench.Vhost(*mgmt, *amqpURL)
		if err != nil {
			return err
		}
		r, err := bench.Worker(ctx, bench.WorkerOptions{MySQLDSN: *dsn, AMQPURL: vhost, Messages: *messages, Log: os.Stderr})
		drop()
		if err != nil {
			return fmt.Errorf("worker stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "webhook") {
		r, err := webhookStage(ctx, *dsn)
		if err != nil {
			return fmt.Errorf("webhook stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "catchup") {
		r, err := catchupStage(ctx, *dsn)
		if err != nil {
			return fmt.Errorf("catchup stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "processes") {
		vhost, drop, err := bench.Vhost(*mgmt, *amqpURL)
		if err != nil {
			return err
		}
		r, err := bench.Processes(ctx, bench.ProcessesOptions{MySQLDSN: *dsn, AMQPURL: vhost, Log: os.Stderr})
		drop()
		if err != nil {
			return fmt.Errorf("processes stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "import") {
		r, err := bench.Import(ctx, bench.ImportOptions{MySQLDSN: *dsn, Log: os.Stderr})
		if err != nil {
			return fmt.Errorf("import stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "backfill") {
		r, err := bench.Backfill(ctx, bench.BackfillOptions{MySQLDSN: *dsn, Users: *backfillUsers, Log: os.Stderr})
		if err != nil {
			return fmt.Errorf("backfill stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "reconcile") {
		r, err := bench.Reconcile(ctx, bench.ReconcileOptions{MySQLDSN: *dsn, Log: os.Stderr})
		if err != nil {
			return fmt.Errorf("reconcile stage: %w", err)
		}
		rows = append(rows, r...)
	}
	if slices.Contains(want, "ops") {
		vhost, drop, err := bench.Vhost(*mgmt, *amqpURL)
		if err != nil {
			return err
		}
		r, err := bench.Ops(ctx, bench.OpsOptions{MySQLDSN: *dsn, AMQPURL: vhost, Messages: *messages, Rounds: *opsRounds, Log: os.Stderr})
		drop()
		if err != nil {
			return fmt.Errorf("ops stage: %w", err)
		}
		rows = append(rows, r...)
	}
	var pipelines [][]bench.PipelineStep
	var failedRuns []string
	if slices.Contains(want, "pipeline") {
		if *repeat < 1 {
			return fmt.Errorf("-repeat %d: want at least 1", *repeat)
		}
		var rs []int
		for _, f := range strings.Split(*rates, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return fmt.Errorf("-rates %q: want positive integers", *rates)
			}
			rs = append(rs, n)
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		for i := range *repeat {
			if *repeat > 1 {
				fmt.Fprintf(os.Stderr, "pipeline: run %d of %d\n", i+1, *repeat)
			}
			vhost, drop, err := bench.Vhost(*mgmt, *amqpURL)
			if err != nil {
				return err
			}
			steps, err := bench.Pipeline(ctx, bench.PipelineOptions{MySQLDSN: *dsn, AMQPURL: vhost, Rates: rs, MixRate: *mixRate,
				Step: *step, LinkByEmail: *linkByEmail, KeepClimbing: *climb, WorkerConcurrency: *workerConc, ProfileDir: *profileDir,
				SandboxCommand: []string{self, sandboxChild}, Log: os.Stderr})
			drop()
			if err != nil && *repeat == 1 {
				return fmt.Errorf("pipeline stage: %w", err)
			}
			if err != nil {
				// The other runs still count: this one's steps so far are
				// summarised, the rest as not sustained.
				fmt.Fprintf(os.Stderr, "pipeline: run %d failed: %v\n", i+1, err)
				failedRuns = append(failedRuns, fmt.Sprintf("run %d: %v", i+1, err))
			}
			pipelines = append(pipelines, steps)
		}
	}
	if len(rows) > 0 {
		bench.Table(os.Stdout, rows)
	}
	workerConcurrency := "default"
	if *workerConc > 0 {
		workerConcurrency = strconv.Itoa(*workerConc)
	}
	for i, steps := range pipelines {
		run := ""
		if len(pipelines) > 1 {
			run = fmt.Sprintf(", run %d of %d", i+1, len(pipelines))
		}
		fmt.Printf("\n## Pipeline (TANDEM_LINK_BY_EMAIL=%v, TANDEM_WORKER_CONCURRENCY %s%s)\n\n", *linkByEmail, workerConcurrency, run)
		bench.PipelineTable(os.Stdout, steps)
	}
	if len(pipelines) > 1 {
		fmt.Printf("\n## Pipeline over %d runs\n\n", len(pipelines))
		bench.PipelineSummary(os.Stdout, pipelines)
	}
	if len(failedRuns) > 0 {
		return fmt.Errorf("pipeline stage: %d of %d runs failed:\n%s", len(failedRuns), len(pipelines), strings.Join(failedRuns, "\n"))
	}
	return nil
}

func relayStage(ctx context.Context, dsn, amqpURL, mgmt string, messages int) ([]bench.Row, error) {
	vhost, drop, err := bench.Vhost(mgmt, amqpURL)
	if err != nil {
		return nil, err
	}
	defer drop()
	fmt.Fprintln(os.Stderr, "relay: raw confirmed publish vs relay drain, then lag at 1,000 writes/s")
	res, err := relaybench.Run(ctx, io.Discard, dsn, vhost, relaybench.Options{Messages: messages})
	if err != nil {
		return nil, err
	}
	raw := max(res.RawRate, res.RawNRate)
	return []bench.Row{
		{Stage: "RabbitMQ: raw confirmed publish (amqp091-go)", Conc: res.Workers, Ops: res.Messages, Rate: raw},
		{Stage: "Relay: outbox drain → confirmed publish", Conc: res.Workers, Ops: res.Messages, Rate: res.RelayRate,
			Ratios: map[string]float64{"raw publish": res.Ratio}, Note: "target ≥ 80 % of raw"},
		{Stage: "Relay: outbox lag commit → confirm at 1,000 writes/s", Ops: res.LagUsers, Rate: res.LagWriteRate,
			P50: res.LagP50, P99: res.LagP99, Note: "target p99 ≤ 50 ms"},
	}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
