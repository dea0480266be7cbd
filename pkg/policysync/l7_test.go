package policysync

// SluiceL7Policy through the reconciler into a loaded datapath's maps:
// the redirect entries reach pod b's policy map, the uplinks' gate
// (sl_proxy) counts it, the compiled L7 config is published, and the
// proxy ports survive a restart. Packets to b go through sl_to_ep with
// BPF_PROG_TEST_RUN, as forwarded from the wire, where a connection to be
// proxied that was not handed over fails closed.
//
//	pod a 10.244.1.2 (app=a) ──► :80 ─┐   SluiceL7Policy api: b's port 80, from app=a: GET
//	pod c 10.244.2.9 (app=c) ──► :80 ─┼── sl_to_ep ──► pod b 10.244.1.3 (endpoint 7)
//	pod a 10.244.1.2 (app=a) ──► :81 ─┘   no NetworkPolicy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

func l7Policy(name string, methods ...string) *model.L7Policy {
	p := &model.L7Policy{Namespace: "x", Name: name, PodSelector: model.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}
	for _, m := range methods {
		p.Ports = append(p.Ports, model.L7Port{Port: model.PortNumber(80), Protocol: model.ProtocolTCP,
			From: []model.Peer{{PodSelector: &model.LabelSelector{MatchLabels: map[string]string{"app": "a"}}}},
			HTTP: []model.HTTPRule{{Method: m}}})
	}
	return p
}

func TestL7RedirectsReachTheMaps(t *testing.T) {
	stateDir := t.TempDir()
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x"}},
		{Op: model.OpUpsert, Object: pod("x", "a", "n1", podA.String(), map[string]string{"app": "a"})},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", podB.String(), map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: pod("x", "c", "n2", podC.String(), map[string]string{"app": "c"})},
		{Op: model.OpUpsert, Object: l7Policy("api", "GET")},
	})
	require.NoError(t, err)
	// What a previous agent saved: a's rule set on 15500.
	require.NoError(t, os.WriteFile(filepath.Join(stateDir, proxyPortsFile), []byte(`{"ports":{"TCP/80 x/api#0":15500}}`), 0o600))
	dp := datapathtest.Load(t, datapath.Config{})
	m := dp.Maps()
	start := func() *Reconciler {
		r, err := New(Options{NodeName: "n1", Maps: m, Store: store, StateDir: stateDir,
			Endpoints: fakeEndpoints{{ID: 7, Namespace: "x", Pod: "b", IPs: []string{podB.String()}}}})
		require.NoError(t, err)
		id, flags := r.Prepare(nameB, 7)
		require.Equal(t, datapath.EPFlagPolicyIngress, flags, "ingress enforced: no NetworkPolicy, but L7 ports")
		require.NoError(t, m.PutEndpoint(datapath.EndpointEntry{IfIndex: 1, ID: 7, IPv4: podB, Identity: id, PolicyFlags: flags}))
		r.Placed(nameB, 7, 1, id, flags)
		r.pass(true)
		require.Empty(t, r.Status().LastError)
		return r
	}
	r := start()

	// The entries: a's identity and everyone else to two listeners.
	got, err := m.DumpEndpointPolicy(7)
	require.NoError(t, err)
	var redirects []datapath.PolicyEntry
	for _, e := range got.Entries {
		if e.Verdict == uint8(policy.Redirect) {
			redirects = append(redirects, e)
		}
	}
	require.Len(t, redirects, 2, "%+v", got.Entries)
	ports := map[uint16]bool{}
	for _, e := range redirects {
		assert.Equal(t, uint16(80), e.Port)
		assert.Equal(t, uint8(16), e.PortPrefixLen)
		ports[e.ProxyPort] = true
	}
	assert.Equal(t, map[uint16]bool{15500: true, 15000: true}, ports, "a's rule set keeps its saved port; the deny-all listener gets the lowest free one")
	var st bpfobj.EndpointSlProxyState
	require.NoError(t, dp.Objects().SlProxy.Lookup(uint32(0), &st))
	assert.Equal(t, uint32(1), st.RedirectingEndpoints, "the uplinks look for connections to hand over")

	// The config the xDS server reads, announced once.
	select {
	case <-r.Changed():
	default:
		t.Fatal("no L7 config change announced")
	}
	cfg := r.L7Config()
	require.Len(t, cfg.Listeners, 2)
	var withRules l7.Listener
	for _, l := range cfg.Listeners {
		if len(l.Rules) > 0 {
			withRules = l
		}
	}
	assert.Equal(t, "GET", withRules.Rules[0].Method)
	assert.Equal(t, 2, r.Status().L7Listeners)
	assert.Equal(t, 1, r.Status().L7Redirecting)
	r.pass(true)
	select {
	case <-r.Changed():
		t.Fatal("a pass that changed nothing announced a change")
	default:
	}

	// Not handed to a proxy, and here at b's own endpoint: closed.
	const next, drop = datapathtest.VerdictNext, datapathtest.VerdictDrop
	ok, other, peer := verdicts(t, dp.Objects().SlToEp)
	assert.Equal(t, []uint32{drop, next, drop}, []uint32{ok, other, peer}, "a:80 and c:80 fail closed, a:81 passes")
	assert.Equal(t, uint64(2), datapathtest.Drops(t, m, "PROXY_UNAVAILABLE"))

	// A restart keeps the ports, saved in the state directory: the
	// entries and the node's Envoy agree across it.
	b, err := os.ReadFile(filepath.Join(stateDir, proxyPortsFile))
	require.NoError(t, err)
	assert.JSONEq(t, `{"ports":{"TCP/80 x/api#0":15500,"TCP/80 deny x/api#0":15000}}`, string(b))
	r2 := start()
	assert.Equal(t, cfg, r2.L7Config())

	// Gone: no redirect left, the gate closes, the config is empty.
	_, err = store.Apply([]model.Change{
		{Op: model.OpDelete, Object: l7Policy("api")},
	})
	require.NoError(t, err)
	r2.pass(false)
	require.Eventually(t, func() bool { return len(r2.L7Config().Listeners) == 0 }, time.Second, 10*time.Millisecond)
	require.NoError(t, dp.Objects().SlProxy.Lookup(uint32(0), &st))
	assert.Zero(t, st.RedirectingEndpoints)
	_, err = m.DumpEndpointPolicy(7)
	assert.Error(t, err, "no policy left: no maps")
}

// The uplinks' gate opens before the endpoint's enforcement turns on: an
// endpoint whose maps redirect, placed after the last pass (Prepare alone,
// as the endpoint manager places a new pod), is counted in sl_proxy at
// once; otherwise neither its own clients nor other nodes' would be handed
// to the proxy until the next pass, and their connections would fail
// closed at the endpoint.
func TestL7PrepareOpensTheProxyGate(t *testing.T) {
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x"}},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", podB.String(), map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: l7Policy("api", "GET")},
	})
	require.NoError(t, err)
	dp := datapathtest.Load(t, datapath.Config{})
	r, err := New(Options{NodeName: "n1", Maps: dp.Maps(), Store: store})
	require.NoError(t, err)
	r.pass(true) // nothing placed yet: the gate stays closed
	var st bpfobj.EndpointSlProxyState
	require.NoError(t, dp.Objects().SlProxy.Lookup(uint32(0), &st))
	require.Zero(t, st.RedirectingEndpoints)

	_, flags := r.Prepare(nameB, 7)
	require.Equal(t, datapath.EPFlagPolicyIngress, flags)
	require.NoError(t, dp.Objects().SlProxy.Lookup(uint32(0), &st))
	assert.Equal(t, uint32(1), st.RedirectingEndpoints, "counted before its enforcement turns on")
	assert.Equal(t, 1, r.Status().L7Redirecting)
}
