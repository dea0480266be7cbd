package endpoint

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/model"
)

// What a CNI ADD (sluice-cni) asks of the manager: the pod's addresses
// reach it through the model (model.Store.SetPodAddrs), its host
// interface as a hint; the manager's own reconcile attaches the
// endpoint as for any other pod, and WaitReady reports when it has.

// SetHint names the host-side interfaces a CNI ADD reported for pod (its
// veth and, with bridge plugins, the bridge). The endpoint uses the veth
// or netkit device among them rather than resolving one from the pod's
// address, which on a bridge needs the pod to answer ARP first.
func (m *Manager) SetHint(pod model.NamespacedName, ifnames []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(ifnames) == 0 {
		delete(m.hints, pod)
		return
	}
	m.hints[pod] = append([]string(nil), ifnames...)
}

// hintedInterface is the hinted pod interface that exists now, if any.
func (m *Manager) hintedInterface(pod model.NamespacedName) netlink.Link {
	for _, name := range m.hints[pod] {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue
		}
		if t := l.Type(); t == "veth" || t == "netkit" {
			return l
		}
	}
	return nil
}

// WaitPass triggers a reconcile pass and waits until one that started
// after the call has completed.
func (m *Manager) WaitPass(ctx context.Context) error {
	_, err := m.waitPass(ctx, func() bool { return true })
	return err
}

// waitPass triggers a pass and waits until done, checked under m.mu after
// each pass that started after the call, returns true.
func (m *Manager) waitPass(ctx context.Context, done func() bool) (bool, error) {
	m.mu.Lock()
	// reconcile holds mu for a whole pass: every pass counted after this
	// one started after the call, and so saw what the caller changed
	// before it.
	start := m.passes
	m.mu.Unlock()
	m.Trigger()
	for {
		m.mu.Lock()
		ch := m.passed
		if m.passes > start && done() {
			m.mu.Unlock()
			return true, nil
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-ch:
		}
	}
}

// WaitReady waits until pod's endpoint has address ip and is ready
// (entry written with its identity and policy flags, programs attached)
// after a pass that started after the call. On ctx's end it says what the
// endpoint is waiting for.
func (m *Manager) WaitReady(ctx context.Context, pod model.NamespacedName, ip netip.Addr) (api.Endpoint, error) {
	var out api.Endpoint
	ok, _ := m.waitPass(ctx, func() bool {
		ep := m.endpoints[pod]
		if ep == nil || !ep.ips.has(ip) || ep.state != "ready" || !m.attached[ep.ifindex] {
			return false
		}
		out = ep.toAPI()
		return true
	})
	if ok {
		return out, nil
	}
	ep, found := m.Lookup(pod)
	switch {
	case !found:
		return api.Endpoint{}, fmt.Errorf("pod %s is no endpoint of this node: the agent's model does not place it here with address %s", pod, ip)
	case ep.Error != "":
		return ep, fmt.Errorf("endpoint of pod %s (%v) is %s: %s", pod, ep.IPs, ep.State, ep.Error)
	default:
		return ep, fmt.Errorf("endpoint of pod %s (%v) is %s, not ready", pod, ep.IPs, ep.State)
	}
}

// Lookup returns pod's endpoint.
func (m *Manager) Lookup(pod model.NamespacedName) (api.Endpoint, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.endpoints[pod]
	if !ok {
		return api.Endpoint{}, false
	}
	out := ep.toAPI()
	if ep.state == "ready" && !m.attached[ep.ifindex] {
		out.State = "detached"
	}
	return out, true
}
