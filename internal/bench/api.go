package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tandem-sync/tandem/internal/api"
	"github.com/tandem-sync/tandem/internal/broker"
	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/relay"
	"github.com/tandem-sync/tandem/internal/store"
)

// APIOptions configure the API write benchmark.
type APIOptions struct {
	MySQLDSN    string // server to use; the database name is replaced
	Concurrency []int
	Warmup      time.Duration
	Duration    time.Duration
	// AMQPURL, if set (a scratch vhost), adds a run of Tandem's API with
	// its outbox relay publishing to that broker, as cmd/api runs it.
	AMQPURL string
	Log     io.Writer // progress lines
}

const (
	insertUser = "INSERT INTO users (id, email, name, phone, metadata, version, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
	insertOut  = "INSERT INTO outbox (event_id, user_id, version, type, origin, created_at, published_at) VALUES (?, ?, ?, ?, ?, ?, NULL)"
)

// rawCreate is the ceiling: the same two-insert transaction the API commits,
// issued directly with database/sql.
func rawCreate(ctx context.Context, db *sql.DB, email, name string) (string, error) {
	id := uuid.Must(uuid.NewV7()).String()
	now := time.Now().UTC().Truncate(time.Microsecond)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, insertUser, id, email, name, "", "{}", 1, now, now); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, insertOut, uuid.Must(uuid.NewV7()).String(), id, 1, store.EventUserCreated, store.OriginAPI, now); err != nil {
		return "", err
	}
	return id, tx.Commit()
}

func openRaw(dsn string, conc int) (*sql.DB, error) {
	cfg, err := store.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conc)
	db.SetMaxIdleConns(conc)
	return db, nil
}

// serve runs h on a loopback port until the returned stop is called.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func httpLoader(base string, conc int, tag string) (func(ctx context.Context, w, n int) error, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	op := func(ctx context.Context, w, n int) error {
		body := fmt.Sprintf(`{"email":"%s-%d-%d@example.com","name":"Bench User"}`, tag, w, n)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users", bytes.NewBufferString(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer bench-token")
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST /v1/users: %s", resp.Status)
		}
		return nil
	}
	return op, tr.CloseIdleConnections
}

// bareHandler is the HTTP baseline: net/http decoding the same JSON and
// committing the same transaction, with nothing else (no validation, auth,
// metrics or logging).
func bareHandler(db *sql.DB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Email, Name string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := rawCreate(r.Context(), db, in.Email, in.Name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "email": in.Email, "name": in.Name, "version": 1})
	})
}

// APIWrites measures, at each concurrency, the raw two-insert transaction
// rate, the same transaction behind a bare net/http handler, and POST
// /v1/users through Tandem's API, each on a fresh database.
func APIWrites(ctx context.Context, o APIOptions) ([]Row, error) {
	var rows []Row
	progress := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	for _, c := range o.Concurrency {
		// 1. Raw ceiling.
		progress("api: raw transaction, C=%d", c)
		raw, err := withDB(ctx, o.MySQLDSN, "raw", func(dsn string) (Row, error) {
			db, err := openRaw(dsn, c)
			if err != nil {
				return Row{}, err
			}
			defer db.Close()
			return load(ctx, c, o.Warmup, o.Duration, func(ctx context.Context, w, n int) error {
				_, err := rawCreate(ctx, db, fmt.Sprintf("raw-%d-%d@example.com", w, n), "Bench User")
				if ctx.Err() != nil {
					return nil
				}
				return err
			})
		})
		if err != nil {
			return nil, fmt.Errorf("raw transaction: %w", err)
		}
		raw.Stage = "MySQL: raw 2-insert tx (database/sql)"

		// 2. The same transaction behind a bare net/http handler.
		progress("api: bare net/http handler, C=%d", c)
		bare, err := withDB(ctx, o.MySQLDSN, "bare", func(dsn string) (Row, error) {
			db, err := openRaw(dsn, c)
			if err != nil {
				return Row{}, err
			}
			defer db.Close()
			base, stop, err := serve(bareHandler(db))
			if err != nil {
				return Row{}, err
			}
			defer stop()
			op, closeIdle := httpLoader(base, c, "bare")
			defer closeIdle()
			return load(ctx, c, o.Warmup, o.Duration, op)
		})
		if err != nil {
			return nil, fmt.Errorf("bare handler: %w", err)
		}
		bare.Stage = "HTTP: bare net/http + same tx"
		bare.Ratios = map[string]float64{"raw": bare.Rate / raw.Rate}

		// 3. Tandem's API.
		progress("api: tandem POST /v1/users, C=%d", c)
		tandem, err := withDB(ctx, o.MySQLDSN, "api", func(dsn string) (Row, error) {
			st, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: c})
			if err != nil {
				return Row{}, err
			}
			defer st.Close()
			base, stop, err := serveAPI(st, ops.NewRegistry())
			if err != nil {
				return Row{}, err
			}
			defer stop()
			op, closeIdle := httpLoader(base, c, "api")
			defer closeIdle()
			return load(ctx, c, o.Warmup, o.Duration, op)
		})
		if err != nil {
			return nil, fmt.Errorf("tandem api: %w", err)
		}
		tandem.Stage = "API: POST /v1/users (Tandem)"
		tandem.Ratios = map[string]float64{"raw": tandem.Rate / raw.Rate, "bare http": tandem.Rate / bare.Rate}
		tandem.Note = "target ≥ 85 % of raw"
		rows = append(rows, raw, bare, tandem)

		// 4. Tandem's API with its relay publishing every change.
		if o.AMQPURL == "" {
			continue
		}
		progress("api: tandem POST /v1/users with its relay, C=%d", c)
		var relayed float64
		withRelay, err := withDB(ctx, o.MySQLDSN, "api_relay", func(dsn string) (Row, error) {
			return apiWithRelay(ctx, dsn, o, c, &relayed)
		})
		if err != nil {
			return nil, fmt.Errorf("tandem api with relay: %w", err)
		}
		withRelay.Stage = "API: POST /v1/users with its relay running (Tandem)"
		withRelay.Ratios = map[string]float64{"raw": withRelay.Rate / raw.Rate, "bare http": withRelay.Rate / bare.Rate}
		withRelay.Note = fmt.Sprintf("target ≥ 85 %% of bare http (issue 15); the relay published %.0f/s meanwhile", relayed)
		rows = append(rows, withRelay)
	}
	return rows, nil
}

// apiWithRelay serves Tandem's API with the outbox relay running as cmd/api
// wires it (notified on every commit, publishing to o.AMQPURL with
// confirms) and loads it with c clients. relayed is set to the messages
// the relay confirmed per second over the measured time.
func apiWithRelay(ctx context.Context, dsn string, o APIOptions, c int, relayed *float64) (Row, error) {
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		return Row{}, err
	}
	defer st.Close()
	conn, err := broker.Dial(ctx, o.AMQPURL, discard, broker.Options{Name: "bench-api",
		Setup: func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, []string{"stripe"}) }})
	if err != nil {
		return Row{}, err
	}
	defer conn.Close()
	for deadline := time.Now().Add(30 * time.Second); conn.Healthy(ctx) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return Row{}, fmt.Errorf("RabbitMQ at the bench vhost not ready: %w", conn.Healthy(ctx))
		}
	}
	pub := broker.NewPublisher(conn, broker.PublisherOptions{})
	defer pub.Close()
	reg := ops.NewRegistry()
	r, err := relay.New(st, pub, relay.Config{}, discard, reg)
	if err != nil {
		return Row{}, err
	}
	st.OnCommit(r.Notify)
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- r.Run(rctx) }()
	defer func() { stopRelay(); <-relayDone }()
	base, stop, err := serveAPI(st, reg)
	if err != nil {
		return Row{}, err
	}
	defer stop()
	op, closeIdle := httpLoader(base, c, "api")
	defer closeIdle()
	published := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "tandem_outbox_published_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	var atStart float64
	go func() {
		select {
		case <-time.After(o.Warmup):
			atStart = published()
		case <-ctx.Done():
		}
	}()
	row, err := load(ctx, c, o.Warmup, o.Duration, op)
	*relayed = (published() - atStart) / o.Duration.Seconds()
	return row, err
}

func withDB(ctx context.Context, baseDSN, tag string, fn func(dsn string) (Row, error)) (Row, error) {
	db, err := NewDatabase(ctx, baseDSN, "tandem_bench_"+tag)
	if err != nil {
		return Row{}, err
	}
	defer db.Close()
	return fn(db.DSN)
}

// serveAPI serves Tandem's REST API on st at a loopback address, with the
// benchmark's token, and returns its base URL and how to stop it.
func serveAPI(st *store.Store, reg *prometheus.Registry) (string, func(), error) {
	app := api.New(st, st, api.Config{Tokens: []string{"bench-token"}, Providers: []string{"stripe"}},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() { _ = app.Listener(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = app.Shutdown() }, nil
}
