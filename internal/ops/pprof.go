package ops

import (
	"net/http"
	"net/http/pprof"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
)

// PprofPrefix is where MountPprof serves the runtime profiles.
const PprofPrefix = "/debug/pprof/"

// MountPprof serves net/http/pprof under /debug/pprof/ on app (the
// process's operations port): the index, cmdline, profile (CPU, ?seconds=),
// symbol, trace and every named profile (heap, goroutine, mutex, block,
// allocs). Processes mount it only when TANDEM_PPROF is true: a profile
// exposes the program's internals and costs CPU while it runs, and the
// endpoints need no token.
func MountPprof(app *fiber.App) {
	mux := http.NewServeMux()
	mux.HandleFunc(PprofPrefix, pprof.Index)
	mux.HandleFunc(PprofPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(PprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(PprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(PprofPrefix+"trace", pprof.Trace)
	app.Get(PprofPrefix+"*", adaptor.HTTPHandler(mux))
}
