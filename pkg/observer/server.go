package observer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// DefaultSocketName is the observer socket's file name in the agent's
// state directory (Cilium's is /var/run/cilium/hubble.sock).
const DefaultSocketName = "hubble.sock"

// HealthServiceName is the service name `hubble status` checks with the
// gRPC health service (cilium pkg/hubble/api/v1.ObserverServiceName). The
// server also answers for "" and the gRPC name "observer.Observer".
const HealthServiceName = "hubble.server.Observer"

// maxSocketPath is the longest unix socket path Linux accepts
// (sizeof(sun_path) less the terminating NUL).
const maxSocketPath = 107

// gracePeriod bounds how long Close waits for unary calls and history
// streams in flight before cutting connections.
const gracePeriod = 2 * time.Second

// Config configures the observer server.
type Config struct {
	// SocketPath is the unix socket to listen on, e.g.
	// /var/run/sluice/hubble.sock; `hubble observe --server
	// unix:///var/run/sluice/hubble.sock` reads it.
	SocketPath string
	// TCPAddress, when set, is also listened on (Hubble's port is 4244).
	// The server speaks plaintext gRPC: bind it to an address only
	// trusted clients reach.
	TCPAddress string
	// SocketGroup is the socket's group, a name or a numeric GID, whose
	// members may read flows; empty leaves it the process's own (root's,
	// for the agent). The socket is mode 0660 from the moment it exists.
	SocketGroup string
	// NodeName and Version are what ServerStatus and GetNodes report.
	NodeName string
	Version  string
}

// Validate reports a configuration the server cannot start with.
func (c *Config) Validate() error {
	switch {
	case c.SocketPath == "":
		return errors.New("observer socket path is empty: set it to a file in the agent's state directory")
	case len(c.SocketPath) > maxSocketPath:
		return fmt.Errorf("observer socket path %q is %d bytes long, longer than the %d a unix socket allows: use a shorter state directory",
			c.SocketPath, len(c.SocketPath), maxSocketPath)
	}
	if _, err := statedir.LookupGroup(c.SocketGroup); err != nil {
		return fmt.Errorf("observer socket: %w", err)
	}
	if c.TCPAddress != "" {
		if _, _, err := net.SplitHostPort(c.TCPAddress); err != nil {
			return fmt.Errorf("observer TCP address %q: %w (want host:port, e.g. 127.0.0.1:4244)", c.TCPAddress, err)
		}
	}
	return nil
}

// Server serves the Observer service and the standard gRPC health
// service on a unix socket and, optionally, a TCP address. It owns its
// listeners and the socket file; Close releases them.
type Server struct {
	log       *slog.Logger
	grpc      *grpc.Server
	health    *health.Server
	cancel    context.CancelFunc
	listeners []net.Listener // the unix socket's removes its file on Close

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start listens and serves flows from store until Close.
func Start(cfg Config, store *flow.Store, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log}
	ok := false
	defer func() {
		if !ok {
			s.closeListeners()
		}
	}()

	gid, err := statedir.LookupGroup(cfg.SocketGroup)
	if err != nil {
		return nil, fmt.Errorf("observer socket: %w", err)
	}
	// Flows name every pod and peer: root and the socket's group only.
	ul, err := statedir.ListenUnix(cfg.SocketPath, gid)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	s.listeners = append(s.listeners, ul)
	address := "unix://" + cfg.SocketPath
	if cfg.TCPAddress != "" {
		tl, err := net.Listen("tcp", cfg.TCPAddress)
		if err != nil {
			return nil, fmt.Errorf("listen for the observer on %s: %w", cfg.TCPAddress, err)
		}
		s.listeners = append(s.listeners, tl)
		address = tl.Addr().String()
	}

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.grpc = grpc.NewServer(grpc.ForceServerCodecV2(newCodec()))
	svc := NewService(ctx, store, cfg.NodeName, cfg.Version, address)
	svc.encoded = true
	observerpb.RegisterObserverServer(s.grpc, svc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	for _, name := range []string{"", HealthServiceName, observerpb.Observer_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}

	for _, l := range s.listeners {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.grpc.Serve(l); err != nil {
				s.log.Warn("observer server stopped", "address", l.Addr().String(), "error", err)
			}
		}()
	}
	ok = true
	log.Info("observer listening", "socket", cfg.SocketPath, "tcp", cfg.TCPAddress)
	return s, nil
}

// Addrs returns the addresses listened on: the unix socket, then TCP.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Close reports NOT_SERVING, ends follow streams, waits briefly for other
// calls, stops the server and removes the socket.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.health.Shutdown()
		s.cancel()
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(gracePeriod):
			s.grpc.Stop()
			<-stopped
		}
		s.wg.Wait()
		s.closeListeners()
	})
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		// Serve's end closed it, normally; the unix socket's file goes now.
		_ = l.Close()
	}
}
