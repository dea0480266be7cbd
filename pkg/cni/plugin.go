package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sluice-net/sluice/pkg/api/cniapi"
)

// Versions are the CNI versions the plugin speaks: every version with
// chained plugins and prevResult (0.3.0 on), up to the library's 1.x.
var Versions = version.VersionsStartingFrom("0.3.0")

// About is what the plugin prints when run without CNI_COMMAND.
const About = "sluice-cni: chained CNI plugin that has the Sluice agent attach and program a pod's endpoint before the pod runs"

// Plugin runs CNI commands. Its zero value writes to the process's
// stdout and stderr.
type Plugin struct {
	Stdout io.Writer
	Stderr io.Writer
}

// Main runs the plugin with the CNI protocol: command and arguments in the
// environment, configuration on stdin, result or error on stdout (exit
// status 1 on error).
func Main() {
	p := &Plugin{}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}, Versions, About)
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

func (p *Plugin) stderr() io.Writer {
	if p.Stderr != nil {
		return p.Stderr
	}
	return os.Stderr
}

// request builds the agent request of a CNI command; for a sandbox that
// is no Kubernetes pod it returns nil.
func request(args *skel.CmdArgs, conf *Config, prev *types100.Result) (*cniapi.Request, error) {
	pa, err := parseArgs(args.Args)
	if err != nil {
		return nil, err
	}
	if pa.Namespace == "" || pa.Name == "" {
		return nil, nil
	}
	req := &cniapi.Request{
		ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		Namespace: pa.Namespace, Pod: pa.Name, PodUID: pa.UID, Timeout: conf.timeout,
	}
	if prev != nil {
		for _, ipc := range prev.IPs {
			req.IPs = append(req.IPs, ipc.Address.IP.String())
		}
		for _, itf := range prev.Interfaces {
			if itf.Sandbox == "" && itf.Name != "" {
				req.HostInterfaces = append(req.HostInterfaces, itf.Name)
			}
		}
	}
	return req, nil
}

// prevResult is the main plugin's result, which a chained plugin needs.
func prevResult(conf *Config, cmd string) (*types100.Result, error) {
	if conf.PrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("sluice-cni: %s without prevResult: sluice-cni is a chained plugin and must follow the main plugin (which assigns the pod's address) in the \"plugins\" of a .conflist", cmd), "")
	}
	res, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "sluice-cni: convert prevResult: "+err.Error(), "")
	}
	return res, nil
}

// Add asks the agent to attach and program the pod's endpoint, then
// passes the main plugin's result on unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf, "ADD")
	if err != nil {
		return err
	}
	req, err := request(args, conf, prev)
	if err != nil {
		return err
	}
	if req == nil {
		fmt.Fprintf(p.stderr(), "sluice-cni: container %s is no Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS): passed through\n", args.ContainerID)
	} else if _, err := call(conf, cniapi.PathAdd, req, "; the pod is not started unpoliced: the kubelet retries"); err != nil {
		return err
	}
	res, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "sluice-cni: prevResult as version "+conf.CNIVersion+": "+err.Error(), "")
	}
	return res.PrintTo(p.stdout())
}

// Del tells the agent to forget the sandbox. It succeeds when the agent
// is not running: the agent releases endpoints of pods that are gone
// from the model when it returns, and a failing DEL would only keep the
// runtime from freeing the sandbox.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	req, err := request(args, conf, nil)
	if err != nil || req == nil {
		return err
	}
	if _, err := call(conf, cniapi.PathDel, req, ""); err != nil {
		fmt.Fprintf(p.stderr(), "sluice-cni: DEL of %s/%s: %v (ignored: the agent cleans up from the model)\n", req.Namespace, req.Pod, err)
	}
	return nil
}

// Check fails unless the agent reports the pod's endpoint ready.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf, "CHECK")
	if err != nil {
		return err
	}
	req, err := request(args, conf, prev)
	if err != nil || req == nil {
		return err
	}
	_, err = call(conf, cniapi.PathCheck, req, "")
	return err
}

// Status (CNI 1.1) reports whether the plugin can take ADDs: only with a
// running agent.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sluice/v1/status", nil)
	if err != nil {
		return err
	}
	resp, err := client(conf).Do(hreq)
	if err != nil {
		return agentError(conf, err, "")
	}
	_ = resp.Body.Close()
	return nil
}

func client(conf *Config) *http.Client {
	sock := conf.Socket()
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// call posts req to the agent and decodes its answer. Every failure is a
// CNI error whose message says what the kubelet's event will show; then
// follows a failure to reach the agent.
func call(conf *Config, path string, req *cniapi.Request, then string) (*cniapi.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sluice"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client(conf).Do(hreq)
	if err != nil {
		return nil, agentError(conf, err, then)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, agentError(conf, err, then)
	}
	if resp.StatusCode/100 != 2 {
		code := types.ErrTryAgainLater
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusNotFound {
			code = types.ErrInternal
		}
		return nil, types.NewError(code, fmt.Sprintf("sluice-cni: pod %s/%s: sluice agent: %s", req.Namespace, req.Pod, strings.TrimSpace(string(b))),
			fmt.Sprintf("%s %s answered %s", conf.Socket(), path, resp.Status))
	}
	var out cniapi.Response
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "sluice-cni: agent answer: "+err.Error(), string(b))
	}
	return &out, nil
}

// agentError explains a failure to reach the agent or to hear from it,
// then what follows from it.
func agentError(conf *Config, err error, then string) error {
	sock := conf.Socket()
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("sluice-cni: the sluice agent at %s did not answer within %s (\"timeout\" of the plugin's configuration)%s", sock, conf.timeout, then), err.Error())
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("sluice-cni: the sluice agent is not running: cannot connect to %s%s", sock, then), err.Error())
	default:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("sluice-cni: talking to the sluice agent at %s: %v%s", sock, err, then), "")
	}
}
