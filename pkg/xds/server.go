package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"google.golang.org/grpc"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// DefaultSocketName is the xDS socket's name in the agent's state
// directory; Envoy's bootstrap names it.
const DefaultSocketName = "xds.sock"

// snapshotKey is the one snapshot's key in the cache. Every Envoy that
// connects is served it, whatever its node id: there is one Envoy per
// node and one agent, and an Envoy whose --service-node differs from the
// agent's --node-name must not be left without configuration (which
// go-control-plane's per-node cache would do, silently). The node ids
// seen are in Status.
const snapshotKey = "sluice"

// anyNode maps every node to snapshotKey.
type anyNode struct{}

func (anyNode) ID(*corev3.Node) string { return snapshotKey }

// ConfigSource produces the node's compiled L7 policy: l7.Source.
type ConfigSource = l7.Source

// ServerOptions configure a Server.
type ServerOptions struct {
	// SocketPath is the unix socket to serve on; SocketGroup its group
	// (-1: the process's). Mode statedir.SocketMode.
	SocketPath  string
	SocketGroup int
	Resources   ResourceOptions
	// Observer counts pushes, ACKs and NACKs; nil counts nothing.
	Observer Observer
	Logger   *slog.Logger
}

// Server serves Envoy its listeners, routes and clusters over ADS, one
// validated, versioned snapshot at a time.
type Server struct {
	opts    ServerOptions
	log     *slog.Logger
	obs     Observer
	ctx     context.Context
	cancel  context.CancelFunc
	cache   cachev3.SnapshotCache
	grpc    *grpc.Server
	tracker *tracker

	mu        sync.Mutex
	served    *Resources // the last good snapshot's; nil before the first
	cfg       l7.Config  // its Config
	pushedAt  time.Time
	pushes    uint64
	lastErr   error
	lastErrAt time.Time

	closeOnce sync.Once
}

// NewServer builds the server: the ADS service on a gRPC server that
// serves nothing until Start. Register other services on the same socket
// (the access log service) with GRPC before Start.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.SocketPath == "" {
		return nil, errors.New("xds: no socket path")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, log: log, obs: orNop(opts.Observer), ctx: ctx, cancel: cancel}
	s.tracker = newTracker(s.obs, log.Warn)
	s.cache = cachev3.NewSnapshotCache(true, anyNode{}, cacheLogger(log))
	s.grpc = grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.grpc, &ads{sotw: sotwv3.NewServer(ctx, s.cache, s.tracker)})
	return s, nil
}

// ads is the aggregated discovery service alone, state of the world:
// what Envoy's bootstrap asks for. (go-control-plane's full server would
// link every other discovery service into the agent.)
type ads struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	sotw sotwv3.Server
}

func (a *ads) StreamAggregatedResources(s discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw.StreamHandler(s, resourcev3.AnyType)
}

// GRPC is the gRPC server behind the socket, for services that share it.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Start listens on the socket and serves in the background until Close.
func (s *Server) Start() error {
	ln, err := statedir.ListenUnix(s.opts.SocketPath, s.opts.SocketGroup)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	go func() {
		if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("xds server stopped", "error", err)
		}
	}()
	s.log.Info("serving xDS", "socket", s.opts.SocketPath)
	return nil
}

// Close ends every stream and removes the socket. Envoy keeps its last
// configuration and reconnects to the next agent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		// Stop, not GracefulStop: ADS streams never end on their own.
		s.grpc.Stop()
	})
}

// Update serves cfg unless it is already served. A Config that cannot be
// generated or does not validate is returned as an error naming the rule
// or resource, and the last good snapshot keeps serving.
func (s *Server) Update(cfg l7.Config) error {
	version, err := Version(cfg, s.opts.Resources)
	if err == nil {
		s.mu.Lock()
		same := s.served != nil && s.served.Version == version
		if same {
			s.lastErr = nil
		}
		s.mu.Unlock()
		if same {
			return nil
		}
	}
	var res *Resources
	var snap *cachev3.Snapshot
	if err == nil {
		res, err = Generate(cfg, s.opts.Resources)
	}
	if err == nil {
		snap, err = res.snapshot()
	}
	if err == nil {
		err = s.cache.SetSnapshot(s.ctx, snapshotKey, snap)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr, s.lastErrAt = err, time.Now()
		return err
	}
	s.served, s.cfg, s.pushedAt, s.lastErr = res, cfg, time.Now(), nil
	s.pushes++
	s.obs.ObserveXDSPush()
	s.log.Info("xds snapshot served", "version", res.Version, "listeners", len(res.Listeners))
	return nil
}

// Run serves src's Config, and each new one, until ctx ends. A Config
// that cannot be served is logged and passed to report (for the agent's
// status); the last good one keeps serving.
func (s *Server) Run(ctx context.Context, src ConfigSource, report func(error)) {
	for {
		if err := s.Update(src.L7Config()); err != nil {
			s.log.Warn("L7 config not served; the previous one keeps serving", "error", err)
			if report != nil {
				report(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-src.Changed():
			if !ok { // a closed channel: no more changes
				<-ctx.Done()
				return
			}
		}
	}
}

// Status is what was served and what Envoy made of it.
func (s *Server) Status() api.ProxyStatus {
	st := api.ProxyStatus{Socket: s.opts.SocketPath, Listeners: []api.ProxyListener{}}
	s.mu.Lock()
	if s.served != nil {
		st.Version, st.PushedAt, st.Pushes = s.served.Version, s.pushedAt, s.pushes
		for _, l := range s.cfg.Listeners {
			st.Listeners = append(st.Listeners, api.ProxyListener{Name: l.Name, Port: l.Port, Rules: len(l.Rules), Audit: l.Audit})
		}
	}
	if s.lastErr != nil {
		st.LastError, st.LastErrorAt = s.lastErr.Error(), s.lastErrAt
	}
	s.mu.Unlock()
	s.tracker.status(&st)
	return st
}

// cacheLogger sends go-control-plane's logs to log: its debug and info
// lines (every watch opened and answered) at debug level.
func cacheLogger(log *slog.Logger) cplog.Logger {
	f := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			if log.Enabled(context.Background(), level) {
				log.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "xds-cache")
			}
		}
	}
	return cplog.LoggerFuncs{DebugFunc: f(slog.LevelDebug), InfoFunc: f(slog.LevelDebug), WarnFunc: f(slog.LevelWarn), ErrorFunc: f(slog.LevelError)}
}
