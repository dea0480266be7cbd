package agent

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
)

// servePprof serves Go's runtime profiles on addr (--pprof-address) until
// stopped, on a server of its own: profiles are for whoever diagnoses the
// agent on the node, not for the address Prometheus scrapes.
func servePprof(addr string, log *slog.Logger) (*httpServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s, err := serveHTTP("--pprof-address", addr, mux, log)
	if err != nil {
		return nil, err
	}
	log.Info("serving runtime profiles", "address", s.ln.Addr().String(), "path", "/debug/pprof/")
	return s, nil
}

// close stops serving at once (profiles in flight are cut short).
func (s *httpServer) close() {
	_ = s.srv.Close()
	_ = s.ln.Close()
}
