// Package userimport loads users in bulk from a file (tandemctl import):
// JSON Lines (one user object per line, as POST /v1/users takes it) or CSV
// (columns email, name, phone, metadata; metadata a JSON object).
//
// Every row is validated exactly as the REST API validates a create
// (api.ParseCreate: the same field rules, the same body limit), emails are
// unique case-insensitively within the file and against live users (as the
// users' unique key compares them), and a refused row is reported with its
// line and reason and nothing of it is written. Valid rows are written in
// batches, one transaction and a few multi-row INSERTs per batch
// (store.ImportUsers), with or without their outbox rows.
//
// A file that cannot be read as its format (a CSV quoting error, a JSON
// array instead of JSON Lines, an unknown CSV header) is refused whole
// before anything is written: Run reads it once to check it (and to count
// its rows for the progress bar), then again to load it, reading and
// validating the next batch while the previous one is written.
package userimport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/userfields"
)

// Format is a file format Run reads.
type Format string

// Formats.
const (
	JSONLines Format = "jsonl"
	CSV       Format = "csv"
)

// ErrUnknownFormat: the format named, or the file's extension, is neither
// JSON Lines nor CSV.
var ErrUnknownFormat = errors.New("unknown format")

// ErrMalformed: the file cannot be read as its format; nothing was written.
var ErrMalformed = errors.New("malformed file")

// FormatOf returns the format named by name ("jsonl", "ndjson", "csv"), or
// when name is empty the one the extension of path implies (.jsonl,
// .ndjson, .csv). Otherwise it returns an error wrapping ErrUnknownFormat.
func FormatOf(path, name string) (Format, error) {
	if name == "" {
		name = strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
		if name == "" {
			return "", fmt.Errorf("%w: %s has no extension; name the format with -format jsonl or -format csv", ErrUnknownFormat, path)
		}
	}
	switch strings.ToLower(name) {
	case "jsonl", "ndjson":
		return JSONLines, nil
	case "csv":
		return CSV, nil
	}
	return "", fmt.Errorf("%w %q: want jsonl (JSON Lines) or csv", ErrUnknownFormat, name)
}

// Store is what Run writes with (*store.Store).
type Store interface {
	ImportUsers(ctx context.Context, rows []store.ImportRow, announce bool) ([]store.User, []store.ImportTaken, error)
}

// Options tune Run.
type Options struct {
	// Format of the file (see FormatOf).
	Format Format
	// Announce writes each user's user.created outbox row with it, so the
	// workers push it; false loads without announcing (a later backfill
	// pushes the users).
	Announce bool
	// BatchRows and BatchBytes bound a batch (one transaction): defaults
	// 500 rows and 4 MiB of row data, well inside MySQL's default
	// max_allowed_packet.
	BatchRows  int
	BatchBytes int
	// Counted, if set, is called once the rows are counted (before any
	// is written), and Progress after each batch with the rows handled so
	// far.
	Counted  func(rows int)
	Progress func(rows int)
}

// Refusal is one refused row.
type Refusal struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// Report is what Run did.
type Report struct {
	File     string    `json:"file"`
	Format   Format    `json:"format"`
	Rows     int       `json:"rows"`     // data rows read (blank lines and a CSV header excluded)
	Imported int       `json:"imported"` // users created
	Pushed   bool      `json:"pushed"`   // their outbox rows were written (not -no-push)
	Batches  int       `json:"batches"`  // transactions committed
	Refused  []Refusal `json:"refused"`  // by line
}

// Run loads the users of the file path into st. On an error (the file is
// malformed, the database fails, ctx ends) the report says what was written
// before it: whole batches only.
func Run(ctx context.Context, st Store, path string, o Options) (Report, error) {
	if o.BatchRows <= 0 {
		o.BatchRows = 500
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 4 << 20
	}
	rep := Report{File: path, Format: o.Format, Pushed: o.Announce, Refused: []Refusal{}}
	if o.Format != JSONLines && o.Format != CSV {
		return rep, fmt.Errorf("%w %q", ErrUnknownFormat, o.Format)
	}
	total, err := scan(path, o.Format, func(int, []byte, string) error { return nil })
	if err != nil {
		return rep, err
	}
	if o.Counted != nil {
		o.Counted(total)
	}

	// The file is read and validated while the previous batch is written:
	// one batch in flight, written in order by one goroutine.
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	l := loader{ctx: wctx, o: o, rep: &rep, seen: map[string]int{}, batches: make(chan batch, 1)}
	w := writer{st: st, announce: o.Announce, progress: o.Progress, stop: stop, done: make(chan struct{})}
	go w.run(wctx, l.batches)
	_, err = scan(path, o.Format, l.row)
	if err == nil {
		err = l.flush()
	}
	close(l.batches)
	<-w.done
	if w.err != nil {
		err = w.err // the reader's error is then the cancellation it caused
	}
	rep.Imported, rep.Batches = w.imported, w.batches
	rep.Refused = append(rep.Refused, w.refused...)
	slices.SortStableFunc(rep.Refused, func(a, b Refusal) int { return a.Line - b.Line })
	return rep, err
}

// loader validates rows and hands them to the writer in batches.
type loader struct {
	ctx     context.Context
	o       Options
	rep     *Report
	seen    map[string]int // email key → line of the row that holds it
	batch   []store.ImportRow
	bytes   int
	batches chan batch
}

// batch is rows to write and how many rows of the file were read by then.
type batch struct {
	rows []store.ImportRow
	read int
}

func (l *loader) refuse(line int, reason string) {
	l.rep.Refused = append(l.rep.Refused, Refusal{Line: line, Reason: reason})
}

// row handles one data row: body is its create request body, or reason why
// there is none.
func (l *loader) row(line int, body []byte, reason string) error {
	l.rep.Rows++
	if reason != "" {
		l.refuse(line, reason)
		return nil
	}
	u, err := api.ParseCreate(body)
	if err != nil {
		l.refuse(line, api.Describe(err))
		return nil
	}
	key := userfields.EmailKey(u.Email)
	if first, dup := l.seen[key]; dup {
		l.refuse(line, fmt.Sprintf("email: the same address as line %d", first))
		return nil
	}
	l.seen[key] = line
	l.batch = append(l.batch, store.ImportRow{Line: line, User: u})
	l.bytes += len(body)
	if len(l.batch) >= l.o.BatchRows || l.bytes >= l.o.BatchBytes {
		return l.flush()
	}
	return nil
}

// flush hands the batch to the writer (waiting while it writes the one
// before), or returns the context's error once the writer failed.
func (l *loader) flush() error {
	if len(l.batch) == 0 {
		return nil
	}
	select {
	case l.batches <- batch{rows: l.batch, read: l.rep.Rows}:
	case <-l.ctx.Done():
		return l.ctx.Err()
	}
	l.batch, l.bytes = make([]store.ImportRow, 0, l.o.BatchRows), 0
	return nil
}

// writer writes batches in order, one transaction each; its first error
// stops it (and the reading, through stop).
type writer struct {
	st       Store
	announce bool
	progress func(rows int)
	stop     context.CancelCauseFunc
	done     chan struct{}

	imported, batches int
	refused           []Refusal
	err               error
}

func (w *writer) run(ctx context.Context, batches <-chan batch) {
	defer close(w.done)
	for b := range batches {
		if w.err != nil {
			continue // drain: the reader stops at its next batch
		}
		if err := ctx.Err(); err != nil {
			w.err = err
			continue
		}
		created, taken, err := w.st.ImportUsers(ctx, b.rows, w.announce)
		if err != nil {
			w.err = fmt.Errorf("rows from line %d: %w", b.rows[0].Line, err)
			w.stop(w.err)
			continue
		}
		for _, t := range taken {
			w.refused = append(w.refused, Refusal{Line: t.Line, Reason: "email: belongs to the live user " + t.UserID})
		}
		w.imported += len(created)
		w.batches++
		if w.progress != nil {
			w.progress(b.read)
		}
	}
}

// scan reads the file and calls fn for every data row, with its line, its
// create body, or the reason it has none; it returns the count of data
// rows. An error of fn stops it.
func scan(path string, f Format, fn func(line int, body []byte, reason string) error) (int, error) {
	file, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer file.Close()
	r := bufio.NewReaderSize(file, 1<<20)
	if f == CSV {
		return scanCSV(path, r, fn)
	}
	return scanJSONLines(path, r, fn)
}

var bom = []byte("\xef\xbb\xbf")

// scanJSONLines reads one object per line. Blank lines are skipped; a line
// longer than the API's body limit is refused without being held.
func scanJSONLines(path string, r *bufio.Reader, fn func(int, []byte, string) error) (int, error) {
	var (
		buf   []byte
		rows  int
		first = true
	)
	for line := 1; ; line++ {
		buf = buf[:0]
		tooLong := false
		var err error
		for {
			var chunk []byte
			chunk, err = r.ReadSlice('\n')
			if !tooLong {
				buf = append(buf, chunk...)
				if len(buf) > api.BodyLimit+2 { // + "\r\n"
					tooLong, buf = true, buf[:0]
				}
			}
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return rows, fmt.Errorf("reading %s: %w", path, err)
		}
		if line == 1 {
			buf = bytes.TrimPrefix(buf, bom)
		}
		text := bytes.TrimRight(buf, "\r\n")
		switch {
		case tooLong:
			rows++
			if ferr := fn(line, nil, fmt.Sprintf("longer than the API's body limit of %d bytes", api.BodyLimit)); ferr != nil {
				return rows, ferr
			}
		case len(bytes.TrimSpace(text)) == 0:
		default:
			if first {
				first = false
				if t := bytes.TrimSpace(text); t[0] == '[' {
					return rows, fmt.Errorf("%w: %s:%d: a JSON array, not JSON Lines (one user object per line)", ErrMalformed, path, line)
				}
			}
			rows++
			if ferr := fn(line, text, ""); ferr != nil {
				return rows, ferr
			}
		}
		if err == io.EOF {
			return rows, nil
		}
	}
}

// csvColumns are the columns a CSV file may have, in their order when it
// has no header.
var csvColumns = []string{"email", "name", "phone", "metadata"}

// scanCSV reads CSV records (RFC 4180; an optional header row naming the
// columns, in any order; without one, email,name[,phone[,metadata]]).
func scanCSV(path string, r *bufio.Reader, fn func(int, []byte, string) error) (int, error) {
	if b, err := r.Peek(len(bom)); err == nil && bytes.Equal(b, bom) {
		_, _ = r.Discard(len(bom))
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // a row of the wrong width is refused, not fatal
	cr.ReuseRecord = true
	var (
		cols *csvLayout
		rows int
	)
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return rows, fmt.Errorf("%w: %s:%d: CSV: %v", ErrMalformed, path, pe.Line, pe.Err)
			}
			return rows, fmt.Errorf("reading %s: %w", path, err)
		}
		line, _ := cr.FieldPos(0)
		if cols == nil {
			var header bool
			cols, header, err = csvHeader(rec)
			if err != nil {
				return rows, fmt.Errorf("%w: %s:%d: %v", ErrMalformed, path, line, err)
			}
			if header {
				continue
			}
		}
		rows++
		body, reason := cols.body(rec)
		if err := fn(line, body, reason); err != nil {
			return rows, err
		}
	}
}

// csvLayout says where each of csvColumns is in a record.
type csvLayout struct {
	index [4]int // column of email, name, phone, metadata; -1 if absent
	width int    // columns every record has (the header's); 0: 2 to 4
}

// csvHeader reads the first record: a header naming columns, or data in
// the default order.
func csvHeader(rec []string) (*csvLayout, bool, error) {
	named := false
	for _, f := range rec {
		named = named || slices.Contains(csvColumns, strings.ToLower(strings.TrimSpace(f)))
	}
	if !named {
		return &csvLayout{index: [4]int{0, 1, 2, 3}}, false, nil
	}
	l := &csvLayout{index: [4]int{-1, -1, -1, -1}, width: len(rec)}
	for i, f := range rec {
		c := slices.Index(csvColumns, strings.ToLower(strings.TrimSpace(f)))
		switch {
		case c < 0:
			return nil, true, fmt.Errorf("CSV header: unknown column %q (want email, name, phone, metadata)", f)
		case l.index[c] >= 0:
			return nil, true, fmt.Errorf("CSV header: column %q twice", f)
		}
		l.index[c] = i
	}
	if l.index[0] < 0 || l.index[1] < 0 {
		return nil, true, errors.New("CSV header: the columns email and name are required")
	}
	return l, true, nil
}

// body turns a CSV record into the create body the API would take: the
// columns as JSON strings (phone left out when empty), metadata as the
// JSON object the column holds (left out when empty).
func (l *csvLayout) body(rec []string) ([]byte, string) {
	switch {
	case l.width > 0 && len(rec) != l.width:
		return nil, fmt.Sprintf("has %d columns; the header has %d", len(rec), l.width)
	case l.width == 0 && (len(rec) < 2 || len(rec) > len(csvColumns)):
		return nil, fmt.Sprintf("has %d columns; want email,name[,phone[,metadata]]", len(rec))
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, name := range csvColumns {
		v := ""
		if c := l.index[i]; c >= 0 && c < len(rec) {
			v = rec[c]
		}
		if !utf8.ValidString(v) {
			return nil, name + ": not valid UTF-8"
		}
		if i >= 2 && v == "" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + name + `":`)
		if name == "metadata" {
			if !json.Valid([]byte(v)) {
				return nil, "metadata: must be a JSON object of string values (the column is not valid JSON)"
			}
			b.WriteString(v)
			continue
		}
		s, _ := json.Marshal(v) // valid UTF-8: nothing is replaced
		b.Write(s)
	}
	b.WriteByte('}')
	return b.Bytes(), ""
}
