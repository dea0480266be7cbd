package harness

import (
	"context"
	"slices"
	"sync"

	"github.com/sluice-net/sluice/internal/testing/l7proxy"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/l7"
)

// L7Proxy is a running stand-in for a node's Envoy (internal/testing/l7proxy)
// in the node's network namespace: it follows the node's agent's compiled
// L7 policy, listens where the datapath hands redirected connections over,
// and records what it saw of each.
type L7Proxy struct {
	*Process

	mu    sync.Mutex
	conns []l7proxy.Conn
	ports []uint16
}

// StartL7Proxy starts the stand-in proxy on the node; with http it decides
// each connection's first HTTP request by the listener's rules.
func (n *Node) StartL7Proxy(http bool) (*L7Proxy, error) {
	p := &L7Proxy{}
	proc, _, err := n.start(workloadSpec{Kind: kindL7Proxy, StateDir: n.StateDir, HTTP: http}, "ready", p.observe)
	if err != nil {
		return nil, err
	}
	p.Process = proc
	return p, nil
}

func (p *L7Proxy) observe(ev event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Event {
	case "proxied":
		if ev.Conn != nil {
			p.conns = append(p.conns, *ev.Conn)
		}
	case "listening":
		p.ports = ev.Ports
		slices.Sort(p.ports)
	}
}

// Conns are the connections the proxy has handled so far.
func (p *L7Proxy) Conns() []l7proxy.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.conns)
}

// Listening are the ports the proxy listens on now.
func (p *L7Proxy) Listening() []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ports)
}

// runL7Proxy is the l7-proxy workload: it polls the agent's L7 config on
// its API socket and serves it until killed.
func runL7Proxy(spec workloadSpec) error {
	config := func(ctx context.Context) (l7.Config, error) {
		var cfg l7.Config
		err := agentGet(ctx, spec.StateDir, api.PathL7Config, &cfg)
		return cfg, err
	}
	emit(event{Event: "ready"})
	return l7proxy.Run(context.Background(), l7proxy.Options{
		Config: config, HTTP: spec.HTTP, Mark: datapath.MarkFromProxy,
		Report:    func(c l7proxy.Conn) { emit(event{Event: "proxied", Conn: &c}) },
		Listening: func(ports []uint16) { emit(event{Event: "listening", Ports: ports}) },
	})
}
