package model

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// ErrNoSuchPod means the pod named in a SetPodAddrs call is not (yet) in
// the model, or the model holds an earlier pod of that name.
var ErrNoSuchPod = errors.New("pod not in the model")

// PodAddrs are the addresses a pod's network plugin gave its current
// sandbox (a CNI ADD), known on the node before the source reports them:
// the API server's pod has no status.podIP until the kubelet writes it,
// seconds after the sandbox already carries traffic.
type PodAddrs struct {
	// UID, if set, is the pod's UID: addresses given to a pod never
	// apply to a later pod of the same name.
	UID string
	// Owner names who set them (the sandbox's container ID), so that a
	// late removal for an earlier sandbox leaves a newer one's alone.
	Owner string
	IPs   []netip.Addr
}

// SetPodAddrs makes the pod's IPs in every snapshot a.IPs, in place of
// what the source reports, until the source reports them itself (then the
// source's order and any further addresses count), ClearPodAddrs removes
// them, or the pod is deleted or replaced by one with another UID. The
// source may still report an earlier sandbox's addresses when a new one
// is created, which is why these win.
//
// It fails with ErrNoSuchPod while the model has no such pod (the
// source has not seen it yet), so the caller can wait for it.
func (s *Store) SetPodAddrs(nn NamespacedName, a PodAddrs) error {
	if len(a.IPs) == 0 {
		return fmt.Errorf("pod %s: no addresses to set", nn)
	}
	a.IPs = slices.Clone(a.IPs)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.base.Pods[nn]
	if p == nil {
		return fmt.Errorf("%w: pod %s", ErrNoSuchPod, nn)
	}
	if a.UID != "" && p.UID != "" && p.UID != a.UID {
		return fmt.Errorf("%w: pod %s has uid %s in the model, not %s (an earlier pod of that name)", ErrNoSuchPod, nn, p.UID, a.UID)
	}
	if reports(p, a.IPs) {
		delete(s.overlay, nn)
		return nil
	}
	s.overlay[nn] = a
	s.publishIfChangedLocked(nn)
	return nil
}

// ClearPodAddrs removes the addresses SetPodAddrs gave pod nn, if owner
// set them (any owner's when owner is empty), and reports whether it did.
func (s *Store) ClearPodAddrs(nn NamespacedName, owner string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.overlay[nn]
	if !ok || (owner != "" && a.Owner != owner) {
		return false
	}
	delete(s.overlay, nn)
	s.publishIfChangedLocked(nn)
	return true
}

// publishIfChangedLocked publishes a new snapshot if pod nn's overlay
// changed it.
func (s *Store) publishIfChangedLocked(nn NamespacedName) {
	was, now := s.state.Pods[nn], s.effectivePodLocked(nn)
	if was == nil && now == nil || was != nil && now != nil && Equal(was, now) {
		return
	}
	s.publishLocked()
}

// reports tells whether the source already reports every address of ips
// for pod p.
func reports(p *Pod, ips []netip.Addr) bool {
	for _, ip := range ips {
		if !slices.Contains(p.IPs, ip) {
			return false
		}
	}
	return true
}

// pruneOverlayLocked drops the addresses of pods that are gone or were
// replaced, and of pods whose source caught up.
func (s *Store) pruneOverlayLocked() {
	for nn, a := range s.overlay {
		p := s.base.Pods[nn]
		if p == nil || a.UID != "" && p.UID != "" && p.UID != a.UID || reports(p, a.IPs) {
			delete(s.overlay, nn)
		}
	}
}

// effectivePodLocked is pod nn as snapshots show it.
func (s *Store) effectivePodLocked(nn NamespacedName) *Pod {
	p := s.base.Pods[nn]
	a, ok := s.overlay[nn]
	if p == nil || !ok {
		return p
	}
	cp := *p
	cp.IPs = a.IPs
	return &cp
}

// overlaidLocked returns a new State that is base with the overlay. It
// shares base's maps (immutable once published) unless the overlay
// changes a pod.
func (s *Store) overlaidLocked() *State {
	st := *s.base
	if len(s.overlay) > 0 {
		st.Pods = maps.Clone(s.base.Pods)
		for nn := range s.overlay {
			st.Pods[nn] = s.effectivePodLocked(nn)
		}
	}
	return &st
}

// PodAddrsList returns the addresses SetPodAddrs set that still stand in
// for the source's, by pod.
func (s *Store) PodAddrsList() map[NamespacedName]PodAddrs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.overlay)
}
