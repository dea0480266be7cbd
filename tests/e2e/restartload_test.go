package e2e

// Restart under load: both agents are SIGKILLed and restarted, again and
// again, while connections are busy on both service paths under policy,
// and while policies, pods and the service's endpoints change:
//
//	node1 (routed, --socket-lb=all)        node2 (bridge, --socket-lb=off)
//	  c1 (app=client) ─┐                    ┌─ c2 (app=client)
//	  d1 (app=denied) ─┤  VIP 10.96.0.10    ├─ d2 (app=denied)
//	  f1 (app=flip)   ─┤  :80/TCP :53/UDP   ├─ f2 (app=flip)
//	  b1 (app=web) ◄───┴────────────────────┴──► b2 (app=web)   :8080/TCP :5353/UDP
//	  new clients n<k>, new backends w<k> on alternate nodes, round by round
//
//	policy: app=web admits app=client on 8080/TCP and 5353/UDP (a pod
//	selector, or a namespace and pod selector: the form alternates), and
//	app=flip too in even rounds only; nothing else.
//
// c1 and c2 hold TCP connections and connected UDP sockets to the VIP and
// straight to both first backends, each asking every 100ms. Every client
// pod opens new connections (TCP and UDP, to the VIP and to both first
// backends) all along; so do d1 and d2, which must never get through, and
// f1 and f2, which must get through exactly when the policy of the round
// admits them. Each round kills both agents and, while they are down,
// changes the policy (its form; app=flip admitted or not), creates a
// client pod, deletes an older one, makes the newest backend terminating
// and removes the one before from the service and deletes its pod; then it
// starts the agents again and, once they are up, adds a new backend.
// Afterwards: no established connection missed a reply or was reset, no
// allowed new connection failed, no denied one got an answer. The test
// logs the counts.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

const (
	// restartRounds is how often both agents are killed and restarted.
	restartRounds = 4
	// newConnTimeout bounds each new connection of the probers: under
	// TCP's initial retransmission timeout (1s), so that a connection
	// whose first SYN was dropped fails instead of passing on the
	// retransmission; a dropped datagram has no retransmission at all.
	newConnTimeout = 900 * time.Millisecond
	// probeEvery paces each prober: every probe is a process start, and
	// the machine has two cores for agents, workloads and the test.
	probeEvery = 300 * time.Millisecond
	// convergeTimeout bounds how long a restarted agent may take to
	// enforce the policy changed while it was down (the old one stays in
	// force until then: the maps are the last good state).
	convergeTimeout = 15 * time.Second
)

// webPolicy admits app=client into app=web on the service's backend ports:
// form 0 with a pod selector, form 1 with a namespace and pod selector in
// one peer (both allow the same clients, in different rules); admitFlip
// admits app=flip as well.
func webPolicy(form int, admitFlip bool) string {
	peer := "    - podSelector:\n        matchLabels:\n          app: client\n"
	if form == 1 {
		peer = "    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: default\n" +
			"      podSelector:\n        matchLabels:\n          app: client\n"
	}
	if admitFlip {
		peer += "    - podSelector:\n        matchLabels:\n          app: flip\n"
	}
	return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web-from-clients\n  namespace: default\nspec:\n" +
		"  podSelector:\n    matchLabels:\n      app: web\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n" + peer +
		"    ports:\n    - protocol: TCP\n      port: 8080\n    - protocol: UDP\n      port: 5353\n"
}

// loadCounts are what the probers saw.
type loadCounts struct {
	mu sync.Mutex
	// allowed and denied count new connections by protocol.
	allowedOK, allowedFailed map[string]int
	deniedBlocked, deniedOK  map[string]int
	problems                 []string
}

func (c *loadCounts) note(format string, args ...any) {
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// count files one probe's results: from a pod the policy allows, each
// must be answered by an app=web pod; from one it denies, none may be.
func (c *loadCounts) count(p *harness.Pod, allowed bool, res []harness.ProbeResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().Format("15:04:05.000")
	for _, r := range res {
		switch {
		case allowed && r.Err == nil && isWebPod(r.Reply):
			c.allowedOK[r.Protocol]++
		case allowed:
			c.allowedFailed[r.Protocol]++
			c.note("%s: allowed %s → %s: reply %q, %v", now, p, r.Target, r.Reply, r.Err)
		case r.Err != nil:
			c.deniedBlocked[r.Protocol]++
		default:
			c.deniedOK[r.Protocol]++
			c.note("%s: denied %s → %s got %q", now, p, r.Target, r.Reply)
		}
	}
}

// prober opens new connections from one pod until halted.
type prober struct {
	stop chan struct{}
	done chan struct{}
}

// startProber probes targets from p every probeEvery until halted,
// counting into counts.
func startProber(t *testing.T, p *harness.Pod, allowed bool, targets []harness.Target, counts *loadCounts) *prober {
	pr := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for {
			select {
			case <-pr.stop:
				return
			case <-tick.C:
			}
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := p.Probe(c, newConnTimeout, targets...)
			cancel()
			if err != nil {
				counts.mu.Lock()
				counts.note("probe from %s could not run: %v", p, err)
				counts.mu.Unlock()
				continue
			}
			counts.count(p, allowed, res)
		}
	}()
	t.Cleanup(pr.halt)
	return pr
}

// halt stops the prober and waits for its last probe; it is idempotent.
func (pr *prober) halt() {
	select {
	case <-pr.stop:
	default:
		close(pr.stop)
	}
	<-pr.done
}

// isWebPod reports whether a whoami reply names a backend (b<k>, w<k>).
func isWebPod(reply string) bool {
	n, ok := strings.CutPrefix(reply, "default/")
	return ok && (strings.HasPrefix(n, "b") || strings.HasPrefix(n, "w"))
}

// probeTargets: the service over TCP and UDP, and the given backends
// straight, over both protocols. A pod on the per-packet path that reuses
// an ephemeral port for the VIP and then straight for a backend gives
// both the same translated tuple (TestServiceTupleReusedStraightToTheBackend).
func probeTargets(backends ...*harness.Pod) []harness.Target {
	ts := []harness.Target{{Protocol: "TCP", Addr: vip, Port: 80}, {Protocol: "UDP", Addr: vip, Port: 53}}
	for _, b := range backends {
		ts = append(ts, harness.Target{Protocol: "TCP", Addr: b.IP, Port: 8080})
		ts = append(ts, harness.Target{Protocol: "UDP", Addr: b.IP, Port: 5353})
	}
	return ts
}

func TestRestartUnderLoad(t *testing.T) {
	e := newEnv(t)
	n1 := e.node("node1", harness.Routed)
	n2 := e.node("node2", harness.Bridge)
	e.nodeArgs[n1] = []string{"--socket-lb=all"}
	e.nodeArgs[n2] = []string{"--socket-lb=off"}
	nodes := []*harness.Node{n1, n2}
	c1 := e.pod(n1, "default", "c1", map[string]string{"app": "client"})
	c2 := e.pod(n2, "default", "c2", map[string]string{"app": "client"})
	d1 := e.pod(n1, "default", "d1", map[string]string{"app": "denied"})
	d2 := e.pod(n2, "default", "d2", map[string]string{"app": "denied"})
	f1 := e.pod(n1, "default", "f1", map[string]string{"app": "flip"})
	f2 := e.pod(n2, "default", "f2", map[string]string{"app": "flip"})
	b1 := e.pod(n1, "default", "b1", map[string]string{"app": "web"})
	b2 := e.pod(n2, "default", "b2", map[string]string{"app": "web"})
	serveWeb(t, b1, b2)
	endpoints := ready(b1, b2)
	writeService := func() {
		require.NoError(t, e.c.WriteManifest("svc-web.yaml", serviceYAML("default", "web", vip, webPorts, endpoints, "")))
	}
	writeService()
	require.NoError(t, e.c.WriteManifest("netpol.yaml", webPolicy(0, false)))
	require.NoError(t, e.c.SyncManifests())
	for _, n := range nodes {
		e.startAgent(n)
		e.waitServicesOn(n, 2)
	}
	require.Eventually(t, func() bool {
		return e.status(n1).Policy.EnforcedEndpoints == 1 && e.status(n2).Policy.EnforcedEndpoints == 1
	}, 10*time.Second, 50*time.Millisecond, "the backends' policy is not enforced")

	var tcps []*harness.TCPClient
	var udps []*harness.UDPClient
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, cl := range tcps {
			t.Logf("TCP connection %d from %s: %d round trips, %d failures, closed: %v", i, cl.LocalAddr, cl.RoundTrips(), cl.Failures(), cl.Closed())
		}
		for i, u := range udps {
			t.Logf("UDP socket %d: %d replies, %d timeouts, %d socket failures", i, len(u.Replies()), u.Timeouts(), u.SocketFailures())
		}
		for _, n := range nodes {
			out, _ := exec.Command(e.cliBin, "--bpf-root", n.BPFRoot, "bpf", "ct", "list").CombinedOutput()
			t.Logf("CT of %s:\n%s", n.Name, out)
			out, _ = exec.Command(e.cliBin, "--state-dir", n.StateDir, "observe", "--last", "100").CombinedOutput()
			t.Logf("flows of %s:\n%s", n.Name, out)
		}
	})
	// Established connections, from each client: TCP to the VIP (four:
	// both backends get some) and straight to both backends; connected UDP
	// to the VIP (two) and straight to the other node's backend.
	for _, c := range []struct{ from, other *harness.Pod }{{c1, b2}, {c2, b1}} {
		for _, dst := range []struct {
			addr   *harness.Pod
			copies int
		}{{nil, 4}, {b1, 1}, {b2, 1}} {
			for range dst.copies {
				addr, port := vip, 80
				if dst.addr != nil {
					addr, port = dst.addr.IP, 8080
				}
				cl, err := c.from.StartTCPClient(addr, port, 100*time.Millisecond)
				require.NoError(t, err)
				tcps = append(tcps, cl)
			}
		}
		for range 2 {
			u, err := c.from.StartUDPClient(vip, 53, 100*time.Millisecond)
			require.NoError(t, err)
			udps = append(udps, u)
		}
		u, err := c.from.StartUDPClient(c.other.IP, 5353, 100*time.Millisecond)
		require.NoError(t, err)
		udps = append(udps, u)
	}

	// progress checks that every established connection answered since
	// the last check.
	tcpMarks, udpMarks := make([]int, len(tcps)), make([]int, len(udps))
	progress := func(when string) {
		t.Helper()
		for i, cl := range tcps {
			require.NoError(t, cl.WaitRoundTrips(ctx(t), tcpMarks[i]+3), "TCP connection %d %s", i, when)
			tcpMarks[i] = cl.RoundTrips()
		}
		for i, u := range udps {
			require.Eventually(t, func() bool { return len(u.Replies()) >= udpMarks[i]+3 }, 10*time.Second, 20*time.Millisecond,
				"UDP socket %d %s: %d replies", i, when, len(u.Replies()))
			udpMarks[i] = len(u.Replies())
		}
	}
	progress("before the first restart")

	counts := &loadCounts{allowedOK: map[string]int{}, allowedFailed: map[string]int{}, deniedBlocked: map[string]int{}, deniedOK: map[string]int{}}
	// On node2 (per-packet) c2 and f2 send UDP to the VIP only and the
	// new clients there (n1, n3) straight to the backends only; d2 both,
	// as its requests are dropped before any reply.
	targets := map[*harness.Pod][]harness.Target{
		c1: probeTargets(b1, b2), c2: probeTargets(b1, b2),
		d1: probeTargets(b1, b2), d2: probeTargets(b1, b2),
		f1: probeTargets(b1, b2), f2: probeTargets(b1, b2),
	}
	probers := map[*harness.Pod]*prober{}
	for _, p := range []*harness.Pod{c1, c2} {
		probers[p] = startProber(t, p, true, targets[p], counts)
	}
	for _, p := range []*harness.Pod{d1, d2, f1, f2} {
		probers[p] = startProber(t, p, false, targets[p], counts)
	}

	// converge waits until p's probes all get the verdict the policy now
	// gives, once a restarted agent enforces the policy changed while it
	// was down.
	converge := func(p *harness.Pod, allowed bool) {
		t.Helper()
		var last []harness.ProbeResult
		require.Eventually(t, func() bool {
			res, err := p.Probe(ctx(t), newConnTimeout, targets[p]...)
			if err != nil {
				return false
			}
			last = res
			for _, r := range res {
				if (r.Err == nil && isWebPod(r.Reply)) != allowed {
					return false
				}
			}
			return true
		}, convergeTimeout, 100*time.Millisecond, "%s: not allowed=%t after the restart: %+v", p, allowed, last)
	}

	var newClients, deleted []*harness.Pod
	var newBackends int
	var slowest time.Duration
	for round := 1; round <= restartRounds; round++ {
		admitFlip := round%2 == 0
		t.Logf("%s round %d: SIGKILL both agents", time.Now().Format("15:04:05.000"), round)
		for _, n := range nodes {
			require.NoError(t, e.agents[n].Kill())
		}
		// The flip pods' verdict changes this round: they are not probed
		// from the change until the new agents enforce it.
		for _, p := range []*harness.Pod{f1, f2} {
			probers[p].halt()
		}
		time.Sleep(time.Second) // under load with no agent
		progress(fmt.Sprintf("while the agents are down (round %d)", round))

		// While they are down: the policy changes (form, app=flip), a
		// client pod is created (the CNI wires it; the new agent attaches
		// it), an earlier client is deleted, the newest backend terminates
		// and the one that terminated last round leaves the service and
		// its pod is deleted.
		require.NoError(t, e.c.WriteManifest("netpol.yaml", webPolicy(round%2, admitFlip)))
		nc := e.pod(nodes[round%2], "default", fmt.Sprintf("n%d", round), map[string]string{"app": "client"})
		targets[nc] = probeTargets(b1, b2)
		if len(newClients) >= 2 {
			gone := newClients[0]
			probers[gone].halt()
			delete(probers, gone)
			require.NoError(t, gone.Delete())
			deleted = append(deleted, gone)
			newClients = newClients[1:]
		}
		newClients = append(newClients, nc)
		for i := range endpoints {
			if endpoints[i].terminating {
				require.NoError(t, endpoints[i].pod.Delete())
				deleted = append(deleted, endpoints[i].pod)
				endpoints = append(endpoints[:i], endpoints[i+1:]...)
				break
			}
		}
		for i := range endpoints {
			if ep := &endpoints[i]; ep.pod.Name[0] == 'w' && !ep.terminating {
				ep.ready, ep.terminating = false, true // still serving: a graceful end
				break
			}
		}
		writeService()
		require.NoError(t, e.c.SyncManifests())
		progress(fmt.Sprintf("after the changes, agents still down (round %d)", round))

		t.Logf("%s round %d: changes made, starting the agents", time.Now().Format("15:04:05.000"), round)
		for _, n := range nodes {
			e.startAgent(n)
		}
		readyAt := time.Now()
		t.Logf("%s round %d: agents ready", readyAt.Format("15:04:05.000"), round)
		progress(fmt.Sprintf("after the restart (round %d)", round))
		probers[nc] = startProber(t, nc, true, targets[nc], counts)
		for _, p := range []*harness.Pod{f1, f2} {
			converge(p, admitFlip)
			slowest = max(slowest, time.Since(readyAt))
			probers[p] = startProber(t, p, admitFlip, targets[p], counts)
		}

		// With the agents up: a new backend joins the service once its
		// endpoint is ready, as Kubernetes lists a pod once it is ready.
		w := e.pod(nodes[(round+1)%2], "default", fmt.Sprintf("w%d", round), map[string]string{"app": "web"})
		serveWeb(t, w)
		require.NoError(t, e.c.SyncManifests())
		for _, n := range nodes {
			e.waitEndpointsReady(n)
		}
		newBackends++
		endpoints = append(endpoints, ready(w)...)
		writeService()
		t.Logf("%s round %d: backend %s added", time.Now().Format("15:04:05.000"), round, w)
		time.Sleep(2 * time.Second) // under load with the new state
		progress(fmt.Sprintf("with the new backend (round %d)", round))
	}
	for _, pr := range probers {
		pr.halt()
	}

	counts.mu.Lock()
	defer counts.mu.Unlock()
	var tcpTrips, tcpStalls, udpReplies, udpTimeouts, udpSocketFailures int
	var resets []string
	for i, cl := range tcps {
		tcpTrips += cl.RoundTrips()
		tcpStalls += cl.Failures()
		if err := cl.Closed(); err != nil {
			resets = append(resets, fmt.Sprintf("TCP connection %d: %v", i, err))
		}
	}
	for _, u := range udps {
		udpReplies += len(u.Replies())
		udpTimeouts += u.Timeouts()
		udpSocketFailures += u.SocketFailures()
	}
	t.Logf("restart under load: %d rounds, %d agent restarts (SIGKILL); %d client pods and %d backends added, %d pods deleted, the policy changed each round (app=flip admitted in even rounds: its new verdict held on every probe within %s of the agents being ready)",
		restartRounds, restartRounds*len(nodes), restartRounds, newBackends, len(deleted), slowest.Round(time.Millisecond))
	t.Logf("established: %d TCP connections, %d round trips, %d stalled, %d reset; %d UDP sockets, %d replies, %d timed out, %d failed",
		len(tcps), tcpTrips, tcpStalls, len(resets), len(udps), udpReplies, udpTimeouts, udpSocketFailures)
	t.Logf("new allowed: TCP %d ok, %d failed; UDP %d ok, %d failed", counts.allowedOK["TCP"], counts.allowedFailed["TCP"],
		counts.allowedOK["UDP"], counts.allowedFailed["UDP"])
	t.Logf("new denied: TCP %d blocked, %d passed; UDP %d blocked, %d passed", counts.deniedBlocked["TCP"], counts.deniedOK["TCP"],
		counts.deniedBlocked["UDP"], counts.deniedOK["UDP"])
	for _, p := range counts.problems {
		t.Log(p)
	}
	require.Empty(t, resets, "established connections were reset")
	require.Zero(t, tcpStalls, "established TCP connections missed replies")
	require.Zero(t, udpTimeouts, "established UDP sockets missed replies")
	require.Zero(t, udpSocketFailures, "established UDP sockets failed")
	require.Zero(t, counts.allowedFailed["TCP"]+counts.allowedFailed["UDP"], "allowed new connections failed")
	require.Zero(t, counts.deniedOK["TCP"]+counts.deniedOK["UDP"], "denied new connections passed")
	require.NotZero(t, counts.allowedOK["TCP"]*counts.allowedOK["UDP"], "no allowed new connections were made")
	require.NotZero(t, counts.deniedBlocked["TCP"]*counts.deniedBlocked["UDP"], "no denied new connections were tried")
}
