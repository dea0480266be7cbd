package xds

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"

	"github.com/sluice-net/sluice/pkg/api"
)

// Observer counts what the server sees, for Prometheus
// (*metrics.Collector implements it). Calls may be concurrent.
type Observer interface {
	// ObserveXDSPush counts a snapshot served.
	ObserveXDSPush()
	// ObserveXDSAck times a response of typeURL from sending to its ACK.
	ObserveXDSAck(typeURL string, latency time.Duration)
	// ObserveXDSNack counts a response of typeURL that Envoy rejected.
	ObserveXDSNack(typeURL string)
}

type nopObserver struct{}

func (nopObserver) ObserveXDSPush()                     {}
func (nopObserver) ObserveXDSAck(string, time.Duration) {}
func (nopObserver) ObserveXDSNack(string)               {}

func orNop(o Observer) Observer {
	if o == nil {
		return nopObserver{}
	}
	return o
}

// sent is the response last sent on a stream for one type, awaiting its
// ACK or NACK (a request carrying its nonce).
type sent struct {
	nonce, version string
	resources      []string
	at             time.Time
}

// stream is one open ADS stream.
type stream struct {
	node    string
	opened  time.Time
	pending map[string]sent // by type URL
}

// tracker follows Envoy's streams through the server's callbacks: which
// response it acknowledged, when, and what it rejected with which
// message. Callbacks run on the streams' goroutines.
type tracker struct {
	obs Observer
	now func() time.Time
	log func(msg string, args ...any)

	mu       sync.Mutex
	streams  map[int64]*stream
	acks     map[string]api.ProxyAck // by type URL, the latest of any stream
	nacks    uint64
	lastNACK *api.ProxyNACK
}

func newTracker(obs Observer, warn func(string, ...any)) *tracker {
	return &tracker{obs: orNop(obs), now: time.Now, log: warn,
		streams: map[int64]*stream{}, acks: map[string]api.ProxyAck{}}
}

var _ sotwv3.Callbacks = (*tracker)(nil)

func (t *tracker) OnStreamOpen(_ context.Context, id int64, _ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[id] = &stream{opened: t.now(), pending: map[string]sent{}}
	return nil
}

func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, id)
}

// OnStreamRequest sees every request: the first names the node (Envoy's
// bootstrap sets set_node_on_first_message_only); one with the nonce of
// the response awaiting an answer is its ACK, or its NACK when it carries
// an error_detail.
func (t *tracker) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	if s == nil {
		return nil
	}
	if n := req.GetNode().GetId(); n != "" {
		s.node = n
	}
	p, ok := s.pending[req.GetTypeUrl()]
	if !ok || req.GetResponseNonce() == "" || req.GetResponseNonce() != p.nonce {
		return nil // a subscription, or the answer to an older response
	}
	delete(s.pending, req.GetTypeUrl())
	now := t.now()
	if d := req.GetErrorDetail(); d != nil {
		t.nacks++
		t.lastNACK = &api.ProxyNACK{TypeURL: req.GetTypeUrl(), Version: p.version, Resources: p.resources,
			Message: d.GetMessage(), Node: s.node, At: now}
		t.obs.ObserveXDSNack(req.GetTypeUrl())
		t.log("envoy rejected a configuration", "type", req.GetTypeUrl(), "version", p.version,
			"resources", p.resources, "node", s.node, "error", d.GetMessage())
		return nil
	}
	latency := now.Sub(p.at)
	t.acks[req.GetTypeUrl()] = api.ProxyAck{TypeURL: req.GetTypeUrl(), Version: req.GetVersionInfo(), Node: s.node, At: now, Latency: latency}
	t.obs.ObserveXDSAck(req.GetTypeUrl(), latency)
	return nil
}

// OnStreamResponse records the response now awaiting Envoy's answer.
func (t *tracker) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	var names []string
	for _, r := range resp.GetResources() {
		if m, err := r.UnmarshalNew(); err == nil {
			names = append(names, cachev3.GetResourceName(m))
		}
	}
	slices.Sort(names)
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.streams[id]; s != nil {
		s.pending[resp.GetTypeUrl()] = sent{nonce: resp.GetNonce(), version: resp.GetVersionInfo(), resources: names, at: t.now()}
	}
}

// status fills the stream, ACK and NACK parts of st.
func (t *tracker) status(st *api.ProxyStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st.Streams = []api.ProxyStream{}
	for id, s := range t.streams {
		st.Streams = append(st.Streams, api.ProxyStream{ID: id, Node: s.node, Opened: s.opened})
	}
	slices.SortFunc(st.Streams, func(a, b api.ProxyStream) int { return int(a.ID - b.ID) })
	st.Acks = []api.ProxyAck{}
	for _, a := range t.acks {
		st.Acks = append(st.Acks, a)
	}
	slices.SortFunc(st.Acks, func(a, b api.ProxyAck) int { return cmp.Compare(a.TypeURL, b.TypeURL) })
	st.NACKs = t.nacks
	if t.lastNACK != nil {
		n := *t.lastNACK
		st.LastNACK = &n
	}
}
