package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/api/cniapi"
	"github.com/sluice-net/sluice/pkg/cni"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
)

// The CNI endpoints the sluice-cni plugin calls (pkg/cni): ADD returns
// once the pod's endpoint is attached and programmed, so the pod's first
// packet is judged by its policy. The endpoint manager stays the owner of
// endpoints: ADD only tells the model the pod's addresses (which the API
// server's pod lacks until the kubelet writes its status) and the
// endpoint manager the pod's interface, then waits for its reconcile.

// cniError is a failed CNI request with the HTTP status to answer.
type cniError struct {
	code int
	err  error
}

func (e *cniError) Error() string { return e.err.Error() }
func (e *cniError) Unwrap() error { return e.err }

func cniFail(code int, format string, args ...any) error {
	return &cniError{code: code, err: fmt.Errorf(format, args...)}
}

// registerCNI adds the CNI endpoints to the API mux.
func (a *Agent) registerCNI(mux *http.ServeMux) {
	mux.HandleFunc("POST "+cniapi.PathAdd, a.cniHandler("add", a.cniAdd))
	mux.HandleFunc("POST "+cniapi.PathDel, a.cniHandler("del", a.cniDel))
	mux.HandleFunc("POST "+cniapi.PathCheck, a.cniHandler("check", a.cniCheck))
}

func (a *Agent) cniHandler(op string, fn func(context.Context, cniapi.Request) (cniapi.Response, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req cniapi.Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "decode CNI request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.Namespace == "" || req.Pod == "" {
			http.Error(w, "CNI request names no pod: CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME", http.StatusBadRequest)
			return
		}
		ctx := r.Context()
		if req.Timeout > 0 {
			// Answer with what is missing before the plugin gives up.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, req.Timeout-min(req.Timeout/10, time.Second))
			defer cancel()
		}
		start := time.Now()
		resp, err := fn(ctx, req)
		log := a.log.With("component", "cni", "op", op, "pod", req.Namespace+"/"+req.Pod, "container", req.ContainerID,
			"took", time.Since(start).Round(time.Millisecond))
		if err != nil {
			code := http.StatusInternalServerError
			var ce *cniError
			if errors.As(err, &ce) {
				code = ce.code
			}
			log.Warn("cni request failed", "error", err)
			http.Error(w, err.Error(), code)
			return
		}
		log.Info("cni request done", "endpoint", resp.Endpoint, "note", resp.Note)
		writeJSON(w, resp)
	}
}

// cniAddrs parses the request's addresses and picks the one the endpoint
// is found by: its IPv4 address, or its IPv6 one for an IPv6-only pod.
func cniAddrs(req cniapi.Request) ([]netip.Addr, netip.Addr, error) {
	var ips []netip.Addr
	var v4, v6 netip.Addr
	for _, s := range req.IPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, v4, cniFail(http.StatusBadRequest, "CNI request: address %q: %w", s, err)
		}
		ips = append(ips, ip)
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	if !v4.IsValid() {
		return ips, v6, nil
	}
	return ips, v4, nil
}

func (a *Agent) cniAdd(ctx context.Context, req cniapi.Request) (cniapi.Response, error) {
	nn := model.NamespacedName{Namespace: req.Namespace, Name: req.Pod}
	ips, primary, err := cniAddrs(req)
	if err != nil {
		return cniapi.Response{}, err
	}
	if !primary.IsValid() {
		return cniapi.Response{Note: fmt.Sprintf("pod %s has no address (%v): not an endpoint", nn, req.IPs)}, nil
	}
	// The pod may not be in the model yet (the source's watch lags the
	// kubelet); the kubelet does not wait for its status to be written.
	ch := a.store.Subscribe()
	defer a.store.Unsubscribe(ch)
	for {
		if p := a.store.Snapshot().Pods[nn]; p != nil && p.NodeName != a.opts.NodeName {
			return cniapi.Response{}, cniFail(http.StatusConflict,
				"pod %s is scheduled on node %q in the model, but this agent is node %q (--node-name)", nn, p.NodeName, a.opts.NodeName)
		}
		err := a.store.SetPodAddrs(nn, model.PodAddrs{UID: req.PodUID, Owner: req.ContainerID, IPs: ips})
		if err == nil {
			break
		}
		if !errors.Is(err, model.ErrNoSuchPod) {
			return cniapi.Response{}, cniFail(http.StatusBadRequest, "%w", err)
		}
		select {
		case <-ctx.Done():
			return cniapi.Response{}, cniFail(http.StatusGatewayTimeout,
				"the %s source has not reported pod %s yet (%v): cannot place it under its policy", a.opts.Source, nn, err)
		case <-ch:
		}
	}
	a.saveCNIAddrs()
	a.eps.SetHint(nn, req.HostInterfaces)
	ep, err := a.eps.WaitReady(ctx, nn, primary)
	if err != nil {
		return cniapi.Response{}, cniFail(http.StatusGatewayTimeout, "%w", err)
	}
	return cniapi.Response{Endpoint: describeEndpoint(ep)}, nil
}

func (a *Agent) cniDel(ctx context.Context, req cniapi.Request) (cniapi.Response, error) {
	nn := model.NamespacedName{Namespace: req.Namespace, Name: req.Pod}
	if !a.store.ClearPodAddrs(nn, req.ContainerID) {
		return cniapi.Response{Note: "nothing to forget: no addresses from this sandbox"}, nil
	}
	a.saveCNIAddrs()
	a.eps.SetHint(nn, nil)
	// A pod whose status has no address stops being an endpoint in this
	// pass; one whose status has it stays until its interface goes.
	if err := a.eps.WaitPass(ctx); err != nil {
		return cniapi.Response{Note: "addresses forgotten; the endpoint is released in the next pass"}, nil
	}
	return cniapi.Response{}, nil
}

func (a *Agent) cniCheck(_ context.Context, req cniapi.Request) (cniapi.Response, error) {
	nn := model.NamespacedName{Namespace: req.Namespace, Name: req.Pod}
	_, primary, err := cniAddrs(req)
	if err != nil {
		return cniapi.Response{}, err
	}
	if !primary.IsValid() {
		return cniapi.Response{Note: "no address: not an endpoint"}, nil
	}
	ep, ok := a.eps.Lookup(nn)
	switch {
	case !ok:
		return cniapi.Response{}, cniFail(http.StatusNotFound, "pod %s has no endpoint on node %s", nn, a.opts.NodeName)
	case len(ep.IPs) == 0 || ep.IPs[0] != primary.String():
		return cniapi.Response{}, cniFail(http.StatusConflict, "endpoint of pod %s has address %v, the sandbox %s", nn, ep.IPs, primary)
	case ep.State != "ready":
		return cniapi.Response{}, cniFail(http.StatusServiceUnavailable, "endpoint of pod %s is %s, not ready: %s", nn, ep.State, ep.Error)
	}
	return cniapi.Response{Endpoint: describeEndpoint(ep)}, nil
}

// cniAddrsFile keeps the addresses CNI ADDs gave pods whose status does
// not show them yet, so that an agent restarting in between still knows
// them: it adopts and keeps their endpoints instead of pruning them.
const cniAddrsFile = "cni-addrs.json"

type savedPodAddrs struct {
	Namespace string       `json:"namespace"`
	Pod       string       `json:"pod"`
	UID       string       `json:"uid,omitempty"`
	Owner     string       `json:"owner,omitempty"`
	IPs       []netip.Addr `json:"ips"`
}

// saveCNIAddrs writes the model's pod address overlay to the state dir.
func (a *Agent) saveCNIAddrs() {
	a.cniSaveMu.Lock()
	defer a.cniSaveMu.Unlock()
	list := []savedPodAddrs{}
	for nn, pa := range a.store.PodAddrsList() {
		list = append(list, savedPodAddrs{Namespace: nn.Namespace, Pod: nn.Name, UID: pa.UID, Owner: pa.Owner, IPs: pa.IPs})
	}
	b, err := json.Marshal(list)
	if err == nil {
		path := filepath.Join(a.opts.StateDir, cniAddrsFile)
		if err = os.WriteFile(path+".tmp", b, 0o644); err == nil {
			err = os.Rename(path+".tmp", path)
		}
	}
	if err != nil {
		a.log.Warn("save the addresses of pods from CNI ADD", "file", cniAddrsFile, "error", err)
	}
}

// restoreCNIAddrs puts the saved overlay back into the model, before the
// endpoint manager adopts the pinned endpoints. Addresses of pods that
// are gone, or whose status now shows them, are dropped.
func (a *Agent) restoreCNIAddrs() {
	b, err := os.ReadFile(filepath.Join(a.opts.StateDir, cniAddrsFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var list []savedPodAddrs
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	if err != nil {
		a.log.Warn("ignoring the saved addresses of pods from CNI ADD", "file", cniAddrsFile, "error", err)
		return
	}
	for _, s := range list {
		nn := model.NamespacedName{Namespace: s.Namespace, Name: s.Pod}
		if err := a.store.SetPodAddrs(nn, model.PodAddrs{UID: s.UID, Owner: s.Owner, IPs: s.IPs}); err != nil {
			a.log.Info("dropping saved CNI addresses", "pod", nn, "reason", err)
		}
	}
	a.saveCNIAddrs()
}

func describeEndpoint(ep api.Endpoint) string {
	return fmt.Sprintf("%s/%s id %d ip %v on %s (ifindex %d), %s", ep.Namespace, ep.Pod, ep.ID, ep.IPs, ep.Interface, ep.IfIndex, ep.State)
}

// CNIOptions say where the node's CNI files are, as the agent sees them,
// and which DaemonSet's removal takes sluice-cni out of them.
type CNIOptions struct {
	ConfDir string
	BinDir  string
	// UninstallWith is NAMESPACE/NAME of the DaemonSet that installs
	// sluice-cni (its init container); empty: the agent never removes it.
	UninstallWith string
}

func (o *CNIOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ConfDir, "cni-conf-dir", o.ConfDir, "the node's CNI network configuration directory (/etc/cni/net.d) as the agent sees it, for --cni-uninstall-with")
	fs.StringVar(&o.BinDir, "cni-bin-dir", o.BinDir, "the node's CNI plugin directory (/opt/cni/bin) as the agent sees it, for --cni-uninstall-with")
	fs.StringVar(&o.UninstallWith, "cni-uninstall-with", o.UninstallWith, "NAMESPACE/NAME of the DaemonSet that installed sluice-cni (--source=kubernetes): when the agent stops and that DaemonSet is gone or being deleted, it removes sluice-cni from --cni-conf-dir and --cni-bin-dir; a rolling update or a drain leaves it (empty: never)")
}

func (o *CNIOptions) validate(source string) error {
	if o.UninstallWith == "" {
		return nil
	}
	var errs []error
	if ns, name, ok := strings.Cut(o.UninstallWith, "/"); !ok || ns == "" || name == "" {
		errs = append(errs, fmt.Errorf("--cni-uninstall-with %q must be NAMESPACE/NAME of a DaemonSet", o.UninstallWith))
	}
	if source != "kubernetes" {
		errs = append(errs, fmt.Errorf("--cni-uninstall-with needs --source=kubernetes: it asks the API server about the DaemonSet"))
	}
	if !filepath.IsAbs(o.ConfDir) {
		errs = append(errs, fmt.Errorf("--cni-uninstall-with needs --cni-conf-dir, an absolute path (have %q)", o.ConfDir))
	}
	if o.BinDir != "" && !filepath.IsAbs(o.BinDir) {
		errs = append(errs, fmt.Errorf("--cni-bin-dir %q must be an absolute path", o.BinDir))
	}
	return errors.Join(errs...)
}

// uninstallCNIIfRemoved takes sluice-cni out of the node's network
// configuration when the agent stops because its install is being
// removed. Only then: once the entry is gone, pods start without their
// policy in place until an agent is back, the very window the plugin
// closes, so a rolling update or a drain must keep it. When the API
// server cannot tell, the entry stays (pods then wait for an agent; see
// daemonset/README.md for removing it by hand).
func (a *Agent) uninstallCNIIfRemoved() {
	o := a.opts.CNI
	if o.UninstallWith == "" {
		return
	}
	log := a.log.With("component", "cni")
	ns, name, _ := strings.Cut(o.UninstallWith, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	removed, why, err := daemonSetRemoved(ctx, a.opts.Kubeconfig, ns, name)
	if err != nil {
		log.Warn("sluice-cni stays installed: cannot tell whether the DaemonSet is being removed", "error", err)
		return
	}
	if !removed {
		log.Info("sluice-cni stays installed", "why", why)
		return
	}
	// The node's L7 proxy goes with the install, and so does the policy
	// routing that delivers connections to it.
	if err := datapath.RemoveProxyRouting(); err != nil {
		log.Warn("removing the L7 proxy's policy routing", "error", err)
	}
	files, err := cni.Uninstall(cni.InstallOptions{ConfDir: o.ConfDir, BinDir: o.BinDir})
	if err != nil {
		log.Error("removing sluice-cni", "why", why, "changed", files, "error", err)
		return
	}
	log.Info("removed sluice-cni from the node's network configuration", "why", why, "files", files)
}
