package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/tandem-sync/tandem/internal/userimport"
)

// maxListedRefusals is how many refused rows the human summary lists (the
// -json document lists them all).
const maxListedRefusals = 20

func importCommand() command {
	return command{
		name:    "import",
		args:    "-file F [-format jsonl|csv] [-no-push]",
		summary: "bulk-load users from JSON Lines or CSV (email,name,phone,metadata), validated like the API; exit 1 if a row is refused",
		setup: func(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
			file := fs.String("file", "", "the file to load (required)")
			format := fs.String("format", "", "jsonl or csv (default: from the file's extension, .jsonl/.ndjson or .csv)")
			noPush := fs.Bool("no-push", false, "load without announcing the users (no outbox rows): push them later with tandemctl backfill")
			batch := fs.Int("batch", 500, "rows per transaction")
			return func(ctx context.Context, e *env) error {
				return runImport(ctx, e, *file, *format, !*noPush, *batch)
			}
		},
	}
}

func runImport(ctx context.Context, e *env, file, format string, announce bool, batch int) error {
	switch {
	case file == "":
		return usagef("-file is required")
	case len(e.args) > 0:
		return usagef("unexpected argument %q", e.args[0])
	case batch <= 0 || batch > 5000:
		return usagef("-batch must be between 1 and 5000")
	}
	f, err := userimport.FormatOf(file, format)
	if err != nil {
		return usagef("%v", err)
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	var bar interface {
		Set(int) error
		Finish() error
	}
	rep, err := userimport.Run(ctx, st, file, userimport.Options{
		Format: f, Announce: announce, BatchRows: batch,
		Counted: func(n int) {
			b := e.progress(int64(n), "importing")
			bar = b
		},
		Progress: func(n int) { _ = bar.Set(n) },
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil && rep.Batches == 0 {
		return err // nothing was written (a malformed file, MySQL down): no report
	}
	if perr := e.result(rep, func(w io.Writer) { printImport(w, rep) }); perr != nil && err == nil {
		err = perr
	}
	switch {
	case err != nil:
		return fmt.Errorf("stopped after importing %d users (whole batches; a re-run refuses them as taken): %w", rep.Imported, err)
	case len(rep.Refused) > 0:
		return fmt.Errorf("%d of %d rows refused (the others are imported)", len(rep.Refused), rep.Rows)
	}
	return nil
}

func printImport(w io.Writer, rep userimport.Report) {
	announced := "announced to the workers"
	if !rep.Pushed {
		announced = "not announced (-no-push): run tandemctl backfill to push them"
	}
	fmt.Fprintf(w, "%s: %d rows, %d users imported (%s), %d refused\n", rep.File, rep.Rows, rep.Imported, announced, len(rep.Refused))
	for i, r := range rep.Refused {
		if i == maxListedRefusals {
			fmt.Fprintf(w, "  … and %d more (-json lists them all)\n", len(rep.Refused)-i)
			break
		}
		fmt.Fprintf(w, "  line %d: %s\n", r.Line, r.Reason)
	}
}
