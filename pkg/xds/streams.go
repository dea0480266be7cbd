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

// OnStreamRequest sees every request. The first names the node (Envoy's
// bootstrap sets set_node_on_first_message_only). Every request's
// version_info is the version of that type Envoy runs: the one it last
// accepted. A request with the nonce of the response awaiting an answer
// is that response's ACK (timed), or its NACK when it carries an
// error_detail. An Envoy that reconnects to a restarted agent says the
// version it runs in its first request, and is sent nothing when that is
// the version served: it is in sync without a new ACK.
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
	typ, now := req.GetTypeUrl(), t.now()
	p, answers := s.pending[typ]
	answers = answers && req.GetResponseNonce() != "" && req.GetResponseNonce() == p.nonce
	if answers {
		delete(s.pending, typ)
	}
	if d := req.GetErrorDetail(); d != nil {
		if !answers {
			return nil // about an older response: its NACK was counted then
		}
		t.nacks++
		t.lastNACK = &api.ProxyNACK{TypeURL: typ, Version: p.version, Resources: p.resources,
			Message: d.GetMessage(), Node: s.node, At: now}
		t.obs.ObserveXDSNack(typ)
		t.log("envoy rejected a configuration", "type", typ, "version", p.version,
			"resources", p.resources, "node", s.node, "error", d.GetMessage())
		return nil
	}
	if req.GetVersionInfo() == "" {
		return nil // a first request: Envoy runs nothing of this type yet
	}
	ack := api.ProxyAck{TypeURL: typ, Version: req.GetVersionInfo(), Node: s.node, At: now}
	if answers {
		ack.Latency = now.Sub(p.at)
		t.obs.ObserveXDSAck(typ, ack.Latency)
	} else if prev, ok := t.acks[typ]; ok && prev.Version == ack.Version {
		return nil // nothing new: keep the ACK's time and latency
	}
	t.acks[typ] = ack
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
