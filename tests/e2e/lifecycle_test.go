package e2e

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/datapath"
)

// An established TCP connection between two pods keeps working while the
// agent is SIGKILLed and while it is down, and after a new agent adopted
// the pinned state; the endpoint keeps its ID and its CT entries.
func TestConnectionSurvivesAgentRestart(t *testing.T) {
	for _, mode := range []harness.Mode{harness.Routed, harness.Bridge} {
		for _, am := range attachModes {
			t.Run(mode.String()+"/"+am.name, func(t *testing.T) {
				e := newEnv(t, am.args...)
				n1 := e.node("node1", mode)
				client := e.pod(n1, "default", "client", nil)
				server := e.pod(n1, "default", "server", nil)
				require.NoError(t, e.c.SyncManifests())
				a := e.startAgent(n1)
				idsBefore := e.endpoints(n1)

				_, err := server.StartTCPEchoServer(9000)
				require.NoError(t, err)
				conn, err := client.StartTCPClient(server.IP, 9000, 50*time.Millisecond)
				require.NoError(t, err)
				require.NoError(t, conn.WaitRoundTrips(ctx(t), 5))

				require.NoError(t, a.Kill())
				down := conn.RoundTrips()
				require.NoError(t, conn.WaitRoundTrips(ctx(t), down+10), "connection stalled while the agent was down")
				// The CLI reads the pins with no agent running.
				ct := e.ct(n1)
				require.NotEmpty(t, ct)

				e.startAgent(n1)
				st := e.status(n1)
				require.True(t, st.Adopted, "the new agent adopted the pinned state")
				up := conn.RoundTrips()
				require.NoError(t, conn.WaitRoundTrips(ctx(t), up+10), "connection stalled after the restart")
				require.Zero(t, conn.Failures(), "last error: %v", conn.LastErr())
				require.Equal(t, idsBefore, e.endpoints(n1), "endpoints keep their IDs and interfaces")

				// The same connection, not a new one: still one egress entry for the client.
				var n int
				for _, c := range e.ct(n1) {
					if c.Dst == server.IP.String()+":9000" && c.Origin == "egress" {
						n++
						require.Equal(t, "established", c.State)
					}
				}
				require.Equal(t, 1, n)
			})
		}
	}
}

// Pods come and go: a deleted pod's programs, entry and CT state are
// removed; a pod created while the agent runs is attached when its
// interface appears; a recreated interface is attached again.
func TestEndpointLifecycle(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "default", "a", nil)
	b := e.pod(n1, "default", "b", nil)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)
	echo(t, &a.Host, "TCP", b.IP, 80)
	bID := endpointID(t, e.endpoints(n1), b)

	// Delete b: the CNI removes its veth, the manifest drops the pod.
	require.NoError(t, b.Delete())
	require.NoError(t, e.c.SyncManifests())
	require.Eventually(t, func() bool {
		var entries []datapath.EndpointEntry
		if json.Unmarshal([]byte(e.cli(n1, "bpf", "endpoint", "list", "-o", "json")), &entries) != nil {
			return false
		}
		for _, c := range e.ct(n1) {
			if c.EndpointID == bID {
				return false
			}
		}
		return len(entries) == 1 && len(e.endpoints(n1)) == 1
	}, 20*time.Second, 100*time.Millisecond, "b's endpoint state not cleaned: %s", e.cli(n1, "bpf", "endpoint", "list"))

	// A new pod: manifest first (interface not there yet), then the CNI.
	cNew := e.pod(n1, "default", "c", nil)
	require.NoError(t, e.c.SyncManifests())
	e.waitEndpointsReady(n1)
	_, err = cNew.StartTCPEchoServer(80)
	require.NoError(t, err)
	echo(t, &a.Host, "TCP", cNew.IP, 80)
	require.Contains(t, e.cli(n1, "endpoint", "list"), "default/c")

	// The CNI recreates c's interface (same name and address, new
	// ifindex): the agent notices and attaches to the new one.
	before := e.endpoints(n1)
	recreateInterface(t, n1, cNew)
	require.Eventually(t, func() bool {
		for _, ep := range e.endpoints(n1) {
			if ep.Pod == "c" {
				for _, old := range before {
					if old.Pod == "c" {
						return ep.State == "ready" && ep.IfIndex != old.IfIndex && ep.ID == old.ID
					}
				}
			}
		}
		return false
	}, 20*time.Second, 100*time.Millisecond, "not re-attached: %+v", e.endpoints(n1))
	_, err = cNew.StartTCPEchoServer(81)
	require.NoError(t, err)
	echo(t, &a.Host, "TCP", cNew.IP, 81)
	cID := endpointID(t, e.endpoints(n1), cNew)
	_, ok := findCT(e.ct(n1), cID, "TCP", a.IP, netip.AddrPortFrom(cNew.IP, 81))
	require.True(t, ok, "traffic on the new interface passes the programs")

	// The agent's endpoint list says which interface each pod has.
	for _, ep := range e.endpoints(n1) {
		require.True(t, strings.HasPrefix(ep.Interface, "lxc"), "%+v", ep)
	}
}

// A bad manifest is rejected with a precise error; what worked keeps
// working, also across an agent restart.
func TestBadManifestKeepsLastGoodState(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	a := e.pod(n1, "default", "a", nil)
	b := e.pod(n1, "default", "b", nil)
	require.NoError(t, e.c.SyncManifests())
	agent := e.startAgent(n1)
	_, err := b.StartTCPEchoServer(80)
	require.NoError(t, err)

	// Break the cluster's manifest: an unknown field in the second document.
	bad := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: extra\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  namespace: default\nspec:\n  nodeName: node1\n  containers:\n  - name: c\n    image: x\n    portz: []\n"
	require.NoError(t, n1.WriteManifest("zz-broken.yaml", bad))
	require.Eventually(t, func() bool {
		for _, er := range e.status(n1).Errors {
			if strings.Contains(er.Message, "zz-broken.yaml: document 2 (Pod default/broken)") && strings.Contains(er.Message, "portz") {
				return true
			}
		}
		return false
	}, 10*time.Second, 100*time.Millisecond, "error not reported: %+v", e.status(n1).Errors)
	require.Contains(t, e.cli(n1, "status"), "zz-broken.yaml")
	echo(t, &a.Host, "TCP", b.IP, 80)
	require.Len(t, e.endpoints(n1), 2)

	// Restart with the bad file still there: nothing is flushed.
	require.NoError(t, agent.Stop())
	e.startAgent(n1)
	echo(t, &a.Host, "TCP", b.IP, 80)
	require.NotEmpty(t, e.status(n1).Errors)

	// Fixing the file clears the error.
	require.NoError(t, n1.RemoveManifest("zz-broken.yaml"))
	require.Eventually(t, func() bool { return len(e.status(n1).Errors) == 0 }, 10*time.Second, 100*time.Millisecond)
}

// Two agents never share a bpf root.
func TestSecondAgentOnSameRootRefuses(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)
	second, err := n1.StartAgent(e.agentBin, "--state-dir", t.TempDir())
	require.NoError(t, err)
	select {
	case <-second.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("second agent did not exit")
	}
	require.Error(t, second.ExitErr())
	require.Contains(t, second.Logs(), "locked by another sluice agent")
}

// recreateInterface replaces a routed pod's veth as a CNI would after a
// sandbox restart: same names and address, new interface.
func recreateInterface(t *testing.T, n *harness.Node, p *harness.Pod) {
	t.Helper()
	run := func(h *harness.Host, args ...string) {
		out, err := h.Exec(ctx(t), args[0], args[1:]...)
		require.NoError(t, err, "%v: %s", args, out)
	}
	run(&n.Host, "ip", "link", "del", p.HostIfName)
	run(&n.Host, "ip", "link", "add", p.HostIfName, "type", "veth", "peer", "name", "eth0", "netns", p.NetnsName)
	run(&n.Host, "sysctl", "-qw", "net.ipv4.conf."+p.HostIfName+".proxy_arp=1")
	run(&n.Host, "ip", "link", "set", p.HostIfName, "up")
	run(&p.Host, "ip", "addr", "add", p.IP.String()+"/32", "dev", "eth0")
	run(&p.Host, "ip", "link", "set", "eth0", "up")
	run(&p.Host, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
	run(&n.Host, "ip", "route", "add", p.IP.String()+"/32", "dev", p.HostIfName)
}
