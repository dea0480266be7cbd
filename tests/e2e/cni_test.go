package e2e

// The sluice-cni chained plugin, run as the container runtime runs it
// (the real binary; configuration and prevResult on stdin, CNI_* in the
// environment), for a pod that a policy selects before it exists and
// whose manifest, as on a real API server at CNI ADD time, has labels and
// spec.nodeName but no status.podIP yet:
//
//	node1 (routed)
//	  allowed (app=allowed)  :80 tcp, :7 udp  ◄──── new (app=new)   egress: only to app=allowed
//	  denied  (app=denied)   :80 tcp, :7 udp  ◄─✗─┘
//
// With ADD, the pod's very first packet (a UDP datagram to denied) is
// dropped by its policy; without ADD the same first datagram gets
// through, because the agent does not know the pod's address until the
// kubelet writes its status.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/api"
)

const cniPkg = "github.com/sluice-net/sluice/cmd/sluice-cni"

const egressOnlyToAllowed = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: new-egress
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: new
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector:
        matchLabels:
          app: allowed
`

// cniResult is what the plugin printed and how it exited.
type cniResult struct {
	stdout, stderr string
	exitCode       int
}

// runCNI runs the sluice-cni binary for pod p the way a runtime runs a
// chained plugin after a ptp-style main plugin: prevResult names the
// pod's host veth, its eth0 in the pod's netns and its address.
func runCNI(t *testing.T, bin, command string, n *harness.Node, p *harness.Pod, containerID string) cniResult {
	t.Helper()
	prev := map[string]any{
		"cniVersion": "1.0.0",
		"interfaces": []map[string]any{
			{"name": p.HostIfName, "mac": p.HostMAC.String()},
			{"name": "eth0", "mac": p.MAC.String(), "sandbox": p.NetnsPath},
		},
		"ips":    []map[string]any{{"address": p.IP.String() + "/32", "interface": 1, "gateway": "169.254.1.1"}},
		"routes": []map[string]any{{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}},
	}
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "sluice-cni",
		"stateDir": n.StateDir, "timeout": "20s", "prevResult": prev,
	}
	stdin, err := json.Marshal(conf)
	require.NoError(t, err)
	c, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, bin)
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+p.NetnsPath,
		"CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Dir(bin),
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE="+p.Namespace+";K8S_POD_NAME="+p.Name+
			";K8S_POD_INFRA_CONTAINER_ID="+containerID+";K8S_POD_UID="+p.UID,
	)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	r := cniResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exitCode = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	t.Logf("sluice-cni %s %s: exit %d, stdout %s, stderr %s", command, p, r.exitCode, strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
	return r
}

// endpointOf returns p's endpoint on n, if any.
func (e *env) endpointOf(n *harness.Node, p *harness.Pod) (api.Endpoint, bool) {
	for _, ep := range e.endpoints(n) {
		if ep.Namespace == p.Namespace && ep.Pod == p.Name {
			return ep, true
		}
	}
	return api.Endpoint{}, false
}

func TestCNIChainedPluginPolicesFirstPacket(t *testing.T) {
	e := newEnv(t)
	cniBin := harness.BuildBinary(t, cniPkg)
	n1 := e.node("node1", harness.Routed)
	allowed := e.pod(n1, "x", "allowed", map[string]string{"app": "allowed"})
	denied := e.pod(n1, "x", "denied", map[string]string{"app": "denied"})
	for _, p := range []*harness.Pod{allowed, denied} {
		_, err := p.StartUDPEchoServer(7)
		require.NoError(t, err)
		_, err = p.StartTCPEchoServer(80)
		require.NoError(t, err)
	}
	require.NoError(t, e.c.WriteManifest("netpol.yaml", egressOnlyToAllowed))
	require.NoError(t, e.c.SyncManifests())
	e.startAgent(n1)

	// newPod creates a pod as the main CNI plugin would (netns, veth,
	// address, routes) whose manifest is what the API server has at ADD
	// time, and waits until the agent's model has it.
	newPod := func(name string) *harness.Pod {
		p, err := n1.AddPod(ctx(t), "x", name, map[string]string{"app": "new", "case": name})
		require.NoError(t, err)
		p.SetPending(true)
		require.NoError(t, e.c.SyncManifests())
		// Its label set's identity tells the model has it.
		require.Eventually(t, func() bool {
			var ids json.RawMessage
			return n1.AgentGet(ctx(t), api.PathIdentities, &ids) == nil && strings.Contains(string(ids), "case="+name)
		}, 10*time.Second, 50*time.Millisecond, "the agent's model never had pod x/%s", name)
		_, isEP := e.endpointOf(n1, p)
		require.False(t, isEP, "a pod without status.podIP is no endpoint before ADD")
		return p
	}
	firstPacket := func(p *harness.Pod) (string, error) {
		short, cancel := context.WithTimeout(ctx(t), 2*time.Second)
		defer cancel()
		return p.UDPRequest(short, denied.IP, 7, "first")
	}

	t.Run("ADD: the first packet is judged by the pod's policy", func(t *testing.T) {
		p := newPod("new-cni")
		r := runCNI(t, cniBin, "ADD", n1, p, "sandbox-new-cni")
		require.Zero(t, r.exitCode, "ADD failed: %s %s", r.stdout, r.stderr)
		var res struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), "ADD prints the main plugin's result")
		require.Equal(t, "1.0.0", res.CNIVersion)
		require.Len(t, res.IPs, 1)
		require.Equal(t, p.IP.String()+"/32", res.IPs[0].Address)

		// Right after ADD returned: the pod's very first packet.
		reply, err := firstPacket(p)
		require.Error(t, err, "the pod's first packet reached a peer its policy denies (reply %q)", reply)
		f := e.waitFlow(n1, "policy drop of the first packet", func(f *flowpb.Flow) bool {
			return isDrop(f, "POLICY_DENIED") && f.GetIP().GetSource() == p.IP.String() && f.GetIP().GetDestination() == denied.IP.String()
		})
		require.Equal(t, flowpb.TrafficDirection_EGRESS, f.GetTrafficDirection())
		require.Equal(t, "new-cni", f.GetSource().GetPodName(), "the drop is the new pod's")

		who, err := p.UDPRequest(ctx(t), allowed.IP, 7, "whoami")
		require.NoError(t, err, "the allowed peer is reached")
		require.Equal(t, "x/allowed", who)
		who, err = p.TCPRequest(ctx(t), allowed.IP, 80, "whoami")
		require.NoError(t, err)
		require.Equal(t, "x/allowed", who)

		ep, ok := e.endpointOf(n1, p)
		require.True(t, ok)
		require.Equal(t, "ready", ep.State)
		require.Equal(t, p.HostIfName, ep.Interface)

		r = runCNI(t, cniBin, "CHECK", n1, p, "sandbox-new-cni")
		require.Zero(t, r.exitCode, "CHECK of a ready endpoint: %s", r.stdout)

		// The agent restarts before the kubelet wrote the status: the
		// next agent knows the address from its state dir, adopts the
		// endpoint instead of pruning it, and the pod stays policed.
		require.NoError(t, e.agents[n1].Stop())
		a2, err := n1.StartAgent(e.agentBin, "--ct-gc-interval", "1s")
		require.NoError(t, err)
		e.agents[n1] = a2
		require.NoError(t, a2.WaitReady(ctx(t)), "agent on %s not ready:\n%s", n1.Name, a2.Logs())
		require.Eventually(t, func() bool {
			ep2, ok := e.endpointOf(n1, p)
			return ok && ep2.State == "ready"
		}, 10*time.Second, 50*time.Millisecond, "the pending pod's endpoint after an agent restart: %+v", e.endpoints(n1))
		ep2, _ := e.endpointOf(n1, p)
		require.Equal(t, ep.ID, ep2.ID, "adopted with its ID")
		_, err = firstPacket(p)
		require.Error(t, err, "policed after the agent restarted")

		// The kubelet writes the status: nothing changes.
		p.SetPending(false)
		require.NoError(t, e.c.SyncManifests())
		time.Sleep(500 * time.Millisecond)
		ep3, ok := e.endpointOf(n1, p)
		require.True(t, ok)
		require.Equal(t, ep2, ep3, "the same endpoint once the status reports the address")
		_, err = firstPacket(p)
		require.Error(t, err, "still denied")
		// DEL: the sandbox's addresses are forgotten; a pod whose status
		// has none is no endpoint any more.
		p.SetPending(true)
		require.NoError(t, e.c.SyncManifests())
		time.Sleep(500 * time.Millisecond) // the agent reads the manifests
		r = runCNI(t, cniBin, "DEL", n1, p, "sandbox-new-cni")
		require.Zero(t, r.exitCode, "DEL: %s", r.stdout)
		require.Eventually(t, func() bool { _, ok := e.endpointOf(n1, p); return !ok }, 10*time.Second, 50*time.Millisecond,
			"the endpoint outlives DEL: %+v", e.endpoints(n1))
		r = runCNI(t, cniBin, "DEL", n1, p, "sandbox-new-cni")
		require.Zero(t, r.exitCode, "DEL twice: %s", r.stdout)
		r = runCNI(t, cniBin, "CHECK", n1, p, "sandbox-new-cni")
		require.NotZero(t, r.exitCode, "CHECK without an endpoint fails")
		require.NoError(t, p.Delete())
		require.NoError(t, e.c.SyncManifests())
	})

	t.Run("without ADD the first packet is not policed", func(t *testing.T) {
		// The window the plugin closes, shown: the same sequence without
		// ADD, the datagram reaches the peer the policy denies.
		p := newPod("new-plain")
		reply, err := firstPacket(p)
		require.NoError(t, err, "expected the unpoliced first packet to get through")
		require.Contains(t, reply, "first")
		require.NoError(t, p.Delete())
		require.NoError(t, e.c.SyncManifests())
	})

	t.Run("ADD with the agent stopped fails and says why", func(t *testing.T) {
		p := newPod("new-down")
		require.NoError(t, e.agents[n1].Stop())
		r := runCNI(t, cniBin, "ADD", n1, p, "sandbox-new-down")
		require.NotZero(t, r.exitCode, "ADD succeeded without an agent: %s", r.stdout)
		var cniErr struct {
			CNIVersion string `json:"cniVersion"`
			Code       int    `json:"code"`
			Msg        string `json:"msg"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &cniErr), "stdout is a CNI error: %q", r.stdout)
		require.Equal(t, 11, cniErr.Code, "try again later")
		require.Contains(t, cniErr.Msg, "sluice agent is not running")
		require.Contains(t, cniErr.Msg, n1.APISocket())

		r = runCNI(t, cniBin, "DEL", n1, p, "sandbox-new-down")
		require.Zero(t, r.exitCode, "DEL with the agent down succeeds: %s", r.stdout)

		// The agent is back: the kubelet's retry of ADD succeeds.
		a, err := n1.StartAgent(e.agentBin, "--ct-gc-interval", "1s")
		require.NoError(t, err)
		e.agents[n1] = a
		require.NoError(t, a.WaitReady(ctx(t)), "agent on %s not ready:\n%s", n1.Name, a.Logs())
		r = runCNI(t, cniBin, "ADD", n1, p, "sandbox-new-down")
		require.Zero(t, r.exitCode, "ADD after the agent returned: %s", r.stdout)
		_, err = firstPacket(p)
		require.Error(t, err, "denied")
	})
}
