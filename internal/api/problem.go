package api

import (
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/gofiber/fiber/v2"

	"github.com/tandem-sync/tandem/internal/ops"
	"github.com/tandem-sync/tandem/internal/store"
	"github.com/tandem-sync/tandem/internal/userfields"
)

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
	// ErrorsOmitted counts the field errors left out of Errors, which lists
	// at most MaxListedErrors.
	ErrorsOmitted int `json:"errors_omitted,omitempty"`

	omitted []FieldError // logged, not sent
}

// FieldError is one invalid field of a request.
type FieldError = userfields.FieldError

// MaxListedErrors is the number of field errors a 422 lists; the others are
// counted in errors_omitted (a 1 MiB body could otherwise earn a 5 MB answer).
const MaxListedErrors = 20

// Error lets a Problem travel as an error to the error handler.
func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

const problemBase = "https://tandem-sync.dev/problems/"

func problem(status int, slug, detail string) *Problem {
	return &Problem{Type: problemBase + slug, Title: http.StatusText(status), Status: status, Detail: detail}
}

func invalid(errs []FieldError) *Problem {
	p := problem(fiber.StatusUnprocessableEntity, "validation", "the request has invalid fields")
	p.listErrors(errs)
	return p
}

// toProblem maps an error to the problem sent for it: the one place where
// errors become statuses.
func toProblem(err error) *Problem {
	var p *Problem
	var fe *fiber.Error
	switch {
	case errors.As(err, &p):
		return p
	case errors.Is(err, store.ErrNotFound):
		return problem(fiber.StatusNotFound, "not-found", "no such user")
	case errors.Is(err, store.ErrVersionMismatch):
		return problem(fiber.StatusPreconditionFailed, "version-mismatch", "If-Match does not name the current version")
	case errors.Is(err, store.ErrConflict):
		return problem(fiber.StatusConflict, "email-taken", "the email belongs to another user")
	case errors.Is(err, store.ErrIdempotencyMismatch):
		return problem(fiber.StatusUnprocessableEntity, "idempotency-mismatch", "this Idempotency-Key was used with a different request body")
	case errors.Is(err, store.ErrIdempotencyInFlight):
		return problem(fiber.StatusConflict, "idempotency-in-flight", "a request with this Idempotency-Key is still in progress")
	case errors.Is(err, store.ErrIdempotencyLost):
		return problem(fiber.StatusConflict, "idempotency-in-flight", "a later request with this Idempotency-Key took it over: this one was not applied; replay the key to get the outcome")
	case unavailable(err):
		return problem(fiber.StatusServiceUnavailable, "unavailable", "the database is unreachable: retry later")
	case errors.As(err, &fe):
		switch fe.Code {
		case fiber.StatusBadRequest:
			return problem(fe.Code, "bad-request", fe.Message)
		case fiber.StatusRequestTimeout:
			return problem(fe.Code, "timeout", "the request was not received in time")
		case fiber.StatusUnsupportedMediaType:
			return problem(fe.Code, "unsupported-encoding", fe.Message)
		case fiber.StatusRequestHeaderFieldsTooLarge:
			return problem(fe.Code, "headers-too-large", "the request headers are too large")
		case fiber.StatusRequestEntityTooLarge:
			return problem(fe.Code, "too-large", "the request body is larger than 1 MiB")
		case fiber.StatusNotFound:
			return problem(fe.Code, "no-route", "no such route")
		case fiber.StatusMethodNotAllowed:
			return problem(fe.Code, "method-not-allowed", "method not allowed on this route")
		}
		return problem(fe.Code, "http", fe.Message)
	}
	return problem(fiber.StatusInternalServerError, "internal", "internal error; see the logs for this request id")
}

// retryAfter is the Retry-After of a 503, in seconds.
const retryAfter = "5"

// unavailable reports whether err says the database cannot be reached
// (refused, reset or lost connections, a server shutting down or full):
// a 503 the client may retry, not a bug.
func unavailable(err error) bool {
	var ne net.Error
	var me *mysql.MySQLError
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &ne):
		return true
	case errors.As(err, &me):
		// ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, CR_SERVER_GONE_ERROR, CR_SERVER_LOST
		return me.Number == 1040 || me.Number == 1053 || me.Number == 2006 || me.Number == 2013
	}
	return false
}

// errorHandler writes err as problem+json; 5xx are logged with the request
// logger (errors are logged once, here).
func errorHandler(base *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		p := toProblem(err)
		switch {
		case p.Status == fiber.StatusServiceUnavailable:
			c.Set(fiber.HeaderRetryAfter, retryAfter)
			ops.Logger(c.UserContext(), base).Warn("database unavailable", "error", err.Error())
		case p.Status >= 500:
			ops.Logger(c.UserContext(), base).Error("request failed", "error", err.Error())
		}
		if len(p.omitted) > 0 {
			// The answer lists the first errors; the log keeps the rest
			// (at debug level: they can be as large as the body).
			log := ops.Logger(c.UserContext(), base)
			log.Info("validation errors left out of the answer", "listed", len(p.Errors), "omitted", len(p.omitted))
			log.Debug("validation errors left out of the answer", "errors", p.omitted)
		}
		return sendProblem(c, p)
	}
}

func sendProblem(c *fiber.Ctx, p *Problem) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(p.Status).Send(b)
}
