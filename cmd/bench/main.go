// Command bench measures Tandem's stages against raw ceilings measured in the
// same run and prints one markdown table (see `make bench`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-sync/tandem/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	dsn := fs.String("mysql", envOr("TANDEM_BENCH_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/"), "MySQL server DSN (its database name is replaced)")
	conc := fs.String("c", "32,64", "comma-separated concurrencies for the API stage")
	dur := fs.Duration("duration", 5*time.Second, "measured time per run")
	warm := fs.Duration("warmup", time.Second, "warm-up before each measured run")
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
	host, _ := os.Hostname()
	fmt.Printf("# Tandem benchmark, %s, %s, %d CPUs, %s\n\n", time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.Version())
	rows, err := bench.APIWrites(ctx, bench.APIOptions{MySQLDSN: *dsn, Concurrency: cs, Warmup: *warm, Duration: *dur, Log: os.Stderr})
	if err != nil {
		return err
	}
	bench.Table(os.Stdout, rows)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
