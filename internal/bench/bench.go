// Package bench measures Tandem's stages against raw ceilings taken in the
// same run, because the machine is shared and noisy: a rate only means
// something next to the ceiling measured beside it.
package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tandem-sync/tandem/internal/store"
)

// Row is one line of the report.
type Row struct {
	Stage    string
	Conc     int
	Ops      int
	Rate     float64 // per second
	P50, P99 time.Duration
	// Ratios against the ceilings measured in the same run, by name.
	Ratios map[string]float64
	Note   string
}

// Table writes rows as a markdown table.
func Table(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| stage | concurrency | ops | rate/s | p50 | p99 | ratio | note |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---|")
	for _, r := range rows {
		ratio := ""
		for _, k := range sortedKeys(r.Ratios) {
			if ratio != "" {
				ratio += ", "
			}
			ratio += fmt.Sprintf("%.0f %% of %s", r.Ratios[k]*100, k)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Stage, orDash(r.Conc, "%d"), orDash(r.Ops, "%d"),
			orDash(r.Rate, "%.0f"), fmtDur(r.P50), fmtDur(r.P99), ratio, r.Note)
	}
}

// orDash formats v, or "-" when it is zero (not measured).
func orDash[T int | float64](v T, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

// load runs op from conc goroutines for dur after a warm-up and returns the
// completed operations' rate and latency percentiles. An op error stops the
// run.
func load(ctx context.Context, conc int, warmup, dur time.Duration, op func(ctx context.Context, worker, n int) error) (Row, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(dur)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for n := 0; ; n++ {
				t0 := time.Now()
				if t0.After(end) || ctx.Err() != nil {
					break
				}
				if err := op(ctx, w, n); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				if t0.After(measureFrom) {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return Row{}, firstErr
	}
	return summarize(conc, lat, dur), nil
}

func summarize(conc int, lat []time.Duration, dur time.Duration) Row {
	slices.Sort(lat)
	r := Row{Conc: conc, Ops: len(lat), Rate: float64(len(lat)) / dur.Seconds()}
	if len(lat) > 0 {
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r
}

// Database is a throw-away database for one measurement.
type Database struct {
	DSN   string
	admin *sql.DB
	name  string
}

// NewDatabase creates and migrates a fresh database on the server baseDSN
// names (its database name is replaced).
func NewDatabase(ctx context.Context, baseDSN, name string) (*Database, error) {
	cfg, err := mysql.ParseDSN(baseDSN)
	if err != nil {
		return nil, err
	}
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
		admin.Close()
		return nil, err
	}
	cfg.DBName = name
	cfg.ParseTime = true
	d := &Database{DSN: cfg.FormatDSN(), admin: admin, name: name}
	if err := store.Migrate(ctx, d.DSN); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close drops the database.
func (d *Database) Close() error {
	_, err := d.admin.Exec("DROP DATABASE IF EXISTS `" + d.name + "`")
	d.admin.Close()
	return err
}
