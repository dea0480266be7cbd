package observer

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/statedir"
)

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// flowN is the sample flow name with its time set to t0+n seconds; its
// source port becomes n so received flows can be told apart.
func flowN(name string, n int) *flowpb.Flow {
	f := proto.Clone(sampleFlows()[name]).(*flowpb.Flow)
	f.Time = timestamppb.New(t0.Add(time.Duration(n) * time.Second))
	switch l4 := f.GetL4().GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		l4.TCP.SourcePort = uint32(n)
	case *flowpb.Layer4_UDP:
		l4.UDP.SourcePort = uint32(n)
	}
	return f
}

// seqOf names a received response: its flow's number, or "lost:N".
func seqOf(r *observerpb.GetFlowsResponse) any {
	if l := r.GetLostEvents(); l != nil {
		return "lost:" + l.GetSource().String()
	}
	f := r.GetFlow()
	if tcp := f.GetL4().GetTCP(); tcp != nil {
		return int(tcp.GetSourcePort())
	}
	return int(f.GetL4().GetUDP().GetSourcePort())
}

func startServer(t *testing.T, store *flow.Store, cfg Config) (*Server, *grpc.ClientConn) {
	t.Helper()
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(t.TempDir(), DefaultSocketName)
	}
	srv, err := Start(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient("unix://"+cfg.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn
}

// collect reads a finished GetFlows stream.
func collect(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) []any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("GetFlows(%v): %v", req, err)
		}
		out = append(out, seqOf(r))
	}
}

// The server as `hubble` uses it: over a real unix socket and gRPC client.
func TestServerEndToEnd(t *testing.T) {
	store, err := flow.NewStore(5)
	if err != nil {
		t.Fatal(err)
	}
	// Seven flows into a store of five: 1 and 2 age out.
	names := []string{"web->db", "world->web", "web->dns", "db->web", "web->db", "world->web", "web->db"}
	for i, n := range names {
		store.Add(flowN(n, i+1))
	}
	srv, conn := startServer(t, store, Config{NodeName: "node-a", Version: "v0.1.0-test", TCPAddress: "127.0.0.1:0"})
	c := observerpb.NewObserverClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("ServerStatus", func(t *testing.T) {
		st, err := c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetNumFlows() != 5 || st.GetMaxFlows() != 5 || st.GetSeenFlows() != 7 ||
			st.GetNumConnectedNodes().GetValue() != 1 || st.GetNumUnavailableNodes().GetValue() != 0 ||
			st.GetVersion() != "v0.1.0-test" || st.GetUptimeNs() == 0 || st.GetFlowsRate() <= 0 {
			t.Errorf("status = %v", st)
		}
	})

	t.Run("GetFlows", func(t *testing.T) {
		tests := []struct {
			name string
			req  *observerpb.GetFlowsRequest
			want []any
		}{
			{"last 2", &observerpb.GetFlowsRequest{Number: 2}, []any{6, 7}},
			{"all", &observerpb.GetFlowsRequest{}, []any{3, 4, 5, 6, 7}},
			{"first 2", &observerpb.GetFlowsRequest{Number: 2, First: true}, []any{3, 4}},
			{"last 2 of a pod", &observerpb.GetFlowsRequest{Number: 2, Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"shop/web"}}}}, []any{5, 7}},
			{"blacklist drops", &observerpb.GetFlowsRequest{Blacklist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}}, []any{3, 4, 5, 7}},
			{"since", &observerpb.GetFlowsRequest{Since: timestamppb.New(t0.Add(5 * time.Second))}, []any{5, 6, 7}},
			{"since, first 1", &observerpb.GetFlowsRequest{Number: 1, Since: timestamppb.New(t0.Add(5 * time.Second))}, []any{5}},
			{"until", &observerpb.GetFlowsRequest{Until: timestamppb.New(t0.Add(4 * time.Second))}, []any{3, 4}},
		}
		for _, tt := range tests {
			if got := collect(t, c, tt.req); !slices.Equal(got, tt.want) {
				t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
			}
		}
	})

	t.Run("field mask as hubble observe sends it", func(t *testing.T) {
		mask, err := fieldmaskpb.New(&flowpb.Flow{}, "time", "verdict", "IP", "l4", "source.pod_name", "Summary")
		if err != nil {
			t.Fatal(err)
		}
		stream, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, FieldMask: mask})
		if err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		f := r.GetFlow()
		if f.GetSource().GetPodName() == "" || f.GetIP() == nil || f.GetVerdict() != flowpb.Verdict_FORWARDED ||
			f.GetSource().GetLabels() != nil || f.GetDestination() != nil || f.GetEventType() != nil {
			t.Errorf("masked flow = %v", f)
		}
	})

	t.Run("invalid requests", func(t *testing.T) {
		for _, req := range []*observerpb.GetFlowsRequest{
			{First: true, Follow: true},
			{Whitelist: []*flowpb.FlowFilter{{SourcePort: []string{"x"}}}},
			{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"no_such_field"}}},
		} {
			stream, err := c.GetFlows(ctx, req)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("GetFlows(%v): %v, want InvalidArgument", req, err)
			}
		}
	})

	t.Run("follow", func(t *testing.T) {
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		stream, err := c.GetFlows(fctx, &observerpb.GetFlowsRequest{Number: 1, Follow: true,
			Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"shop/web"}}}})
		if err != nil {
			t.Fatal(err)
		}
		recv := func() any {
			t.Helper()
			r, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return seqOf(r)
		}
		if got := recv(); got != 7 {
			t.Fatalf("history: got %v, want 7", got)
		}
		store.Add(flowN("world->web", 8)) // filtered out
		store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 3)
		store.Add(flowN("web->dns", 9))
		if got := recv(); got != "lost:PERF_EVENT_RING_BUFFER" {
			t.Fatalf("got %v, want the kernel's lost-event notice", got)
		}
		if got := recv(); got != 9 {
			t.Fatalf("got %v, want the new matching flow 9", got)
		}
	})

	t.Run("GetNodes", func(t *testing.T) {
		nodes, err := c.GetNodes(ctx, &observerpb.GetNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.GetNodes()) != 1 {
			t.Fatalf("nodes = %v", nodes)
		}
		n := nodes.GetNodes()[0]
		if n.GetName() != "node-a" || n.GetState() != relaypb.NodeState_NODE_CONNECTED || n.GetVersion() != "v0.1.0-test" ||
			n.GetMaxFlows() != 5 || n.GetSeenFlows() != 9 || n.GetAddress() != srv.Addrs()[1].String() {
			t.Errorf("node = %v", n)
		}
	})

	t.Run("health", func(t *testing.T) {
		h := healthpb.NewHealthClient(conn)
		for _, svc := range []string{"", "hubble.server.Observer", "observer.Observer"} {
			r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health of %q: %v, %v", svc, r, err)
			}
		}
	})

	t.Run("unimplemented", func(t *testing.T) {
		stream, err := c.GetAgentEvents(ctx, &observerpb.GetAgentEventsRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("GetAgentEvents: %v, want Unimplemented", err)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		tc, err := grpc.NewClient(srv.Addrs()[1].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if _, err := observerpb.NewObserverClient(tc).ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err != nil {
			t.Errorf("ServerStatus over TCP: %v", err)
		}
	})
}

// Close ends follow streams promptly and removes the socket.
func TestServerCloseEndsFollowers(t *testing.T) {
	store, _ := flow.NewStore(4)
	srv, conn := startServer(t, store, Config{NodeName: "n"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store.Add(flowN("ping", 1))
	// Receiving the newest stored flow proves the server is following.
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	socket := srv.Addrs()[0].String()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case <-done:
	case <-time.After(gracePeriod / 2):
		t.Fatal("Close waited for the follower")
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("follow stream still open after Close")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind: %v", socket, err)
	}
}

func TestStartSocketPath(t *testing.T) {
	store, _ := flow.NewStore(1)
	dir := t.TempDir()

	// A socket left by a previous agent is replaced.
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: stale})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false) // as if the process died: the file stays
	old.Close()
	s, err := Start(Config{SocketPath: stale}, store, nil)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	s.Close()

	// Any other file is left alone.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Config{SocketPath: file}, store, nil); err == nil {
		t.Fatal("Start over a regular file succeeded")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("regular file touched: %q, %v", b, err)
	}

	for _, cfg := range []Config{
		{},
		{SocketPath: "/" + string(make([]byte, 200))},
		{SocketPath: filepath.Join(dir, "x.sock"), TCPAddress: "4244"},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", cfg)
		}
	}
}

// Flows name every pod and peer of the node: the socket is root's and
// SocketGroup's only, from the moment it exists (statedir's tests show no
// wider mode is ever visible).
func TestSocketModeAndGroup(t *testing.T) {
	testutil.RequireRoot(t) // giving the socket a group root is not in
	store, _ := flow.NewStore(1)
	srv, _ := startServer(t, store, Config{SocketGroup: "4242"})
	path := srv.Addrs()[0].String()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != fs.ModeSocket|0o660 {
		t.Errorf("%s: mode %s, want socket 0660", path, fi.Mode())
	}
	if uid, gid := statedir.Owner(fi); uid != 0 || gid != 4242 {
		t.Errorf("%s: owner %d:%d, want 0:4242", path, uid, gid)
	}
	if _, err := Start(Config{SocketPath: path + "2", SocketGroup: "no-such-group-sluice"}, store, nil); err == nil {
		t.Error("Start with an unknown group succeeded")
	}
}

// fakeStream is a GetFlows stream whose Send reports that it was called,
// then blocks until hold is closed.
type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	entered chan struct{}
	hold    chan struct{}
	sent    chan *observerpb.GetFlowsResponse
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func (s *fakeStream) Send(r *observerpb.GetFlowsResponse) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.hold
	s.sent <- r
	return nil
}

// A follower whose client reads too slowly loses flows, is told so, and
// does not hold up the store's writer.
func TestSlowFollowerGetsLostEvent(t *testing.T) {
	store, _ := flow.NewStore(4)
	store.Add(flowN("web->db", 0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc := NewService(ctx, store, "n", "v", "")
	stream := &fakeStream{ctx: ctx, entered: make(chan struct{}, 1), hold: make(chan struct{}),
		sent: make(chan *observerpb.GetFlowsResponse, 100)}
	done := make(chan error, 1)
	go func() { done <- svc.GetFlows(&observerpb.GetFlowsRequest{Number: 1, Follow: true}, stream) }()

	// The client is stuck on flow 0 while nine more are written into a
	// store of four.
	<-stream.entered
	for i := 1; i <= 9; i++ {
		store.Add(flowN("web->db", i)) // never blocks
	}
	close(stream.hold)

	var got []any
	for len(got) < 6 {
		select {
		case r := <-stream.sent:
			got = append(got, seqOf(r))
			if l := r.GetLostEvents(); l != nil && l.GetNumEventsLost() != 5 {
				t.Errorf("lost %d, want 5", l.GetNumEventsLost())
			}
		case <-ctx.Done():
			t.Fatalf("received %v before timeout", got)
		}
	}
	if want := []any{0, "lost:HUBBLE_RING_BUFFER", 6, 7, 8, 9}; !slices.Equal(got, want) {
		t.Errorf("follower received %v, want %v", got, want)
	}
	if st := store.Stats(); st.FollowersLost != 5 {
		t.Errorf("store counts %d lost by followers, want 5", st.FollowersLost)
	}
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("GetFlows ended with %v, want Canceled", err)
	}
}

// Kernel lost-event notices between the chosen stored flows are sent in
// their place; those before the first chosen flow or after the last are
// not.
func TestHistoryKeepsLostNotices(t *testing.T) {
	store, _ := flow.NewStore(16)
	store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1)
	store.Add(flowN("web->db", 1))
	store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1)
	store.Add(flowN("web->db", 2))
	store.Add(flowN("world->web", 3))
	store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1)
	name := func(evs []flow.Entry) []any {
		var out []any
		for _, e := range evs {
			if e.Lost() != nil {
				out = append(out, "lost")
			} else {
				out = append(out, int(e.Flow().GetL4().GetTCP().GetSourcePort()))
			}
		}
		return out
	}
	webOnly := []*flowpb.FlowFilter{{SourcePod: []string{"shop/web"}}}
	tests := []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want []any
	}{
		{"last 2", &observerpb.GetFlowsRequest{Number: 2}, []any{2, 3}},
		{"last 3", &observerpb.GetFlowsRequest{Number: 3}, []any{1, "lost", 2, 3}},
		{"all", &observerpb.GetFlowsRequest{}, []any{1, "lost", 2, 3}},
		{"first 1", &observerpb.GetFlowsRequest{Number: 1, First: true}, []any{1}},
		{"first 2 matching", &observerpb.GetFlowsRequest{Number: 2, First: true, Whitelist: webOnly}, []any{1, "lost", 2}},
		{"all matching, oldest first", &observerpb.GetFlowsRequest{First: true, Whitelist: webOnly}, []any{1, "lost", 2}},
		{"follow without number: none", &observerpb.GetFlowsRequest{Follow: true}, nil},
		{"follow with number", &observerpb.GetFlowsRequest{Follow: true, Number: 1}, []any{3}},
		{"nothing matches", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"x/"}}}}, nil},
	}
	for _, tt := range tests {
		r, err := parseRequest(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		oldest, next := store.Range()
		if got := name(r.history(store, oldest, next)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: history %v, want %v", tt.name, got, tt.want)
		}
	}
}

// History reads a large store a batch at a time, across the ring's
// wraparound: the picked flows are the ones a scan of the whole store
// picks.
func TestHistoryAcrossBatches(t *testing.T) {
	store, _ := flow.NewStore(3*readBatch + 17)
	for i := range 5*readBatch + 3 {
		name := "web->db"
		if i%3 == 0 {
			name = "world->web"
		}
		store.Add(flowN(name, i))
	}
	all, _ := store.Snapshot()
	var matching []int // source ports of the stored web flows, oldest first
	for _, e := range all {
		if f := e.Flow(); f.GetSource().GetPodName() != "" {
			matching = append(matching, int(f.GetL4().GetTCP().GetSourcePort()))
		}
	}
	ports := func(evs []flow.Entry) []int {
		var out []int
		for _, e := range evs {
			out = append(out, int(e.Flow().GetL4().GetTCP().GetSourcePort()))
		}
		return out
	}
	webOnly := []*flowpb.FlowFilter{{SourcePod: []string{"shop/web"}}}
	for _, tt := range []struct {
		req  *observerpb.GetFlowsRequest
		want []int
	}{
		{&observerpb.GetFlowsRequest{Whitelist: webOnly}, matching},
		{&observerpb.GetFlowsRequest{Number: 300, Whitelist: webOnly}, matching[len(matching)-300:]},
		{&observerpb.GetFlowsRequest{Number: 300, First: true, Whitelist: webOnly}, matching[:300]},
	} {
		r, err := parseRequest(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		oldest, next := store.Range()
		if got := ports(r.history(store, oldest, next)); !slices.Equal(got, tt.want) {
			t.Errorf("number %d first %v: %d flows %v..., want %d %v...", tt.req.Number, tt.req.First, len(got), got[:min(5, len(got))], len(tt.want), tt.want[:5])
		}
	}
}

// recordEnricher knows the web pod (endpoint 12, 10.244.1.5) and the db
// pod (10.244.2.7), each with an identity and its labels.
type recordEnricher struct{}

var (
	recWeb = &model.Pod{Namespace: "shop", Name: "web-0", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")},
		Labels: map[string]string{"app": "web"}, Owners: []model.OwnerRef{{Kind: "StatefulSet", Name: "web", Controller: true}}}
	recDB = &model.Pod{Namespace: "shop", Name: "db-0", IPs: []netip.Addr{netip.MustParseAddr("10.244.2.7")},
		Labels: map[string]string{"app": "db"}}
	recLabels = map[identity.ID]identity.Labels{
		300: identity.NewLabels(identity.Label{Source: "k8s", Key: "app", Value: "web"}),
		301: identity.NewLabels(identity.Label{Source: "k8s", Key: "app", Value: "db"}),
	}
)

func (recordEnricher) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
	if id == 12 {
		return flow.Endpoint{ID: 12, Identity: 300, Pod: recWeb}, true
	}
	return flow.Endpoint{}, false
}

func (recordEnricher) EndpointByIP(ip netip.Addr) (flow.Endpoint, bool) {
	switch ip {
	case recWeb.IPs[0]:
		return flow.Endpoint{ID: 12, Identity: 300, Pod: recWeb}, true
	case recDB.IPs[0]:
		return flow.Endpoint{Identity: 301, Pod: recDB}, true
	}
	return flow.Endpoint{}, false
}

func (recordEnricher) EndpointByCgroup(uint64) (flow.Endpoint, bool) { return flow.Endpoint{}, false }

func (recordEnricher) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	ls, ok := recLabels[id]
	return ls, ok
}

func (recordEnricher) Service(id uint32) (flow.Service, bool) {
	return flow.Service{Namespace: "shop", Name: "db"}, id == 7
}

func (recordEnricher) PolicyRule(uint32) (flow.Rule, bool) { return flow.Rule{}, false }

// records are datapath events of web and db and the world, as the ring
// carries them: n of each kind, source port = sequence number.
func records(conv *flow.Converter, n int) []flow.Record {
	epoch := t0
	var out []flow.Record
	ap := netip.MustParseAddrPort
	for i := range n {
		port := uint16(1000 + len(out))
		for _, ev := range []events.Event{
			{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
				Src: netip.AddrPortFrom(recWeb.IPs[0], port), Dst: ap("10.244.2.7:5432"), ServiceID: 7, VIP: ap("10.96.0.7:5432")},
			{Type: events.ConnEnd, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x11,
				Src: netip.AddrPortFrom(recWeb.IPs[0], port+1), Dst: ap("10.244.2.7:5432"), PacketsOrig: 3, Duration: time.Second},
			{Type: events.Drop, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02, Reason: 133,
				Src: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), port+2), Dst: ap("10.244.1.5:22"),
				Verdict: events.VerdictDeny, SrcIdentity: 2, DstIdentity: 300},
			{Type: events.ConnNew, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
				Src: netip.AddrPortFrom(recDB.IPs[0], port+3), Dst: ap("10.244.1.5:53"), Verdict: events.VerdictAllow, SrcIdentity: 301, DstIdentity: 300},
		} {
			ev.Time = epoch.Add(time.Duration(i) * time.Millisecond)
			rec := ev.Record(epoch)
			out = append(out, conv.Record(&rec, epoch))
		}
	}
	return out
}

// Records stored compact are served as the flows they build, and
// filtered as records exactly as their built flows would be.
func TestGetFlowsOfRecords(t *testing.T) {
	conv := &flow.Converter{NodeName: "node-a", Version: "v", Enricher: recordEnricher{}}
	recs := records(conv, 50)
	store, _ := flow.NewStore(len(recs))
	built := make([]*flowpb.Flow, len(recs))
	for i := range recs {
		store.AddRecord(&recs[i])
		built[i] = recs[i].Build()
	}
	_, conn := startServer(t, store, Config{})
	client := observerpb.NewObserverClient(conn)
	type ff = flowpb.FlowFilter
	for _, filters := range [][]*ff{
		nil,
		{{SourcePod: []string{"shop/web"}}},
		{{DestinationPod: []string{"shop/db-0"}}, {Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}},
		{{SourceLabel: []string{"k8s:app=db"}}},
		{{DestinationLabel: []string{"app in (web)"}, Protocol: []string{"udp"}}},
		{{SourceIp: []string{"203.0.113.0/24"}}},
		{{DestinationPort: []string{"5432"}, TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}},
		{{DestinationService: []string{"shop/db"}}},
		{{EventType: []*flowpb.EventTypeFilter{{Type: flow.MessageTypeTrace, MatchSubType: true, SubType: 5}}}},
		{{EventType: []*flowpb.EventTypeFilter{{Type: flow.MessageTypePolicyVerdict}}}},
		{{Reply: []bool{false}, TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}},
		{{SourceIdentity: []uint32{2}}, {DestinationWorkload: []*flowpb.Workload{{Kind: "StatefulSet"}}}},
		{{NodeName: []string{"node-*"}, IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv4}, Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}},
		{{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}}},
	} {
		fs, err := CompileFilters(filters, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []*flowpb.Flow
		for _, f := range built {
			if fs.Match(f) {
				want = append(want, f)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		stream, err := client.GetFlows(ctx, &observerpb.GetFlowsRequest{Whitelist: filters})
		if err != nil {
			t.Fatal(err)
		}
		var got []*flowpb.Flow
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r.GetFlow())
		}
		cancel()
		if len(got) != len(want) {
			t.Fatalf("filters %v: %d flows, want %d", filters, len(got), len(want))
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("filters %v: flow %d is %v, want %v", filters, i, got[i], want[i])
			}
		}
		if filters != nil && (len(want) == 0 || len(want) == len(built)) {
			t.Errorf("filters %v match %d of %d flows: not a test of filtering", filters, len(want), len(built))
		}
	}
}

// A field mask applies to records as to prebuilt flows.
func TestGetFlowsOfRecordsWithFieldMask(t *testing.T) {
	conv := &flow.Converter{NodeName: "node-a", Version: "v", Enricher: recordEnricher{}}
	recs := records(conv, 2)
	store, _ := flow.NewStore(len(recs))
	for i := range recs {
		store.AddRecord(&recs[i])
	}
	_, conn := startServer(t, store, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{
		FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.pod_name", "verdict"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		built := recs[i].Build()
		want := &flowpb.Flow{Verdict: built.GetVerdict()}
		if built.GetSource() != nil {
			want.Source = &flowpb.Endpoint{PodName: built.GetSource().GetPodName()}
		}
		if !proto.Equal(r.GetFlow(), want) {
			t.Errorf("flow %d: %v, want %v", i, r.GetFlow(), want)
		}
	}
}
