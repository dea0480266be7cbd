package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
)

// AgentStopTimeout is how long Agent.Stop waits after SIGTERM before SIGKILL.
const AgentStopTimeout = 10 * time.Second

// Agent is a sluice-agent process running in a node's network namespace.
type Agent struct {
	Node *Node
	// LogPath is the file holding the agent's stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartAgent starts bin as the node's agent:
//
//	nsenter --net=<NetnsPath> -- <bin> --source=files --manifests <ManifestDir>
//	  --node-name <Name> --bpf-root <BPFRoot> --cgroup-root <CgroupRoot>
//	  --state-dir <StateDir> <extraArgs...>
//
// nsenter, not `ip netns exec`: the latter also unshares the mount namespace
// and remounts /sys, which hides the host's bpffs, so pins would vanish with
// the process and restart survival could not be tested. The agent stays in
// the caller's cgroup (not the node's), so its own sockets are not subject
// to the node's cgroup programs. Output goes to agent-<k>.log in StateDir; a
// node may run one agent after another (restart tests), never two at once.
func (n *Node) StartAgent(bin string, extraArgs ...string) (*Agent, error) {
	c := n.cluster
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("start agent: cluster is cleaned up")
	}
	n.agents++
	k := n.agents
	c.mu.Unlock()

	logPath := filepath.Join(n.StateDir, fmt.Sprintf("agent-%d.log", k))
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start agent on %s: create log: %w", n.Name, err)
	}
	defer logf.Close()
	args := append([]string{
		"--net=" + n.NetnsPath, "--", bin,
		"--source=files",
		"--manifests", n.ManifestDir,
		"--node-name", n.Name,
		"--bpf-root", n.BPFRoot,
		"--cgroup-root", n.CgroupRoot,
		"--state-dir", n.StateDir,
	}, extraArgs...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The agent dies with the test process if that is killed before
	// cleanup; its pins in BPFRoot stay until cleanup removes them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s on %s: %w", bin, n.Name, err)
	}
	a := &Agent{Node: n, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		a.waitErr = cmd.Wait()
		close(a.done)
	}()
	c.track(a)
	c.logf("agent on %s: pid %d, log %s", n.Name, cmd.Process.Pid, logPath)
	return a, nil
}

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Done is closed when the agent has exited.
func (a *Agent) Done() <-chan struct{} { return a.done }

// ExitErr is the agent's exit status once Done is closed (nil for exit 0).
func (a *Agent) ExitErr() error {
	select {
	case <-a.done:
		return a.waitErr
	default:
		return nil
	}
}

// Logs returns the agent's output so far.
func (a *Agent) Logs() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(read agent log %s: %v)", a.LogPath, err)
	}
	return string(b)
}

// Kill sends SIGKILL, as a crash or OOM kill would, and waits for the exit.
// Pinned maps and links stay in the node's BPFRoot.
func (a *Agent) Kill() error {
	a.kill()
	a.Node.cluster.untrack(a)
	select {
	case <-a.done:
		return nil
	default:
		return fmt.Errorf("agent on %s (pid %d) did not exit after SIGKILL", a.Node.Name, a.Pid())
	}
}

func (a *Agent) kill() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-a.done:
	case <-time.After(cgroupKillTimeout):
	}
}

func (a *Agent) host() *Host { return &a.Node.Host }

// Stop sends SIGTERM and waits up to AgentStopTimeout for a graceful exit,
// then SIGKILLs. It returns the exit status of a graceful exit (nil for exit
// 0), or an error saying the agent had to be killed.
func (a *Agent) Stop() error {
	defer a.Node.cluster.untrack(a)
	select {
	case <-a.done:
		return a.waitErr
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		if a.waitErr != nil {
			return fmt.Errorf("agent on %s exited after SIGTERM: %w", a.Node.Name, a.waitErr)
		}
		return nil
	case <-time.After(AgentStopTimeout):
	}
	a.kill()
	return fmt.Errorf("agent on %s did not exit within %s of SIGTERM; killed", a.Node.Name, AgentStopTimeout)
}

// WaitReady polls the agent's status on its API socket until it reports
// ready. It fails when ctx ends or the agent exits first; the error carries
// the last problem seen and the tail of the agent's log.
func (a *Agent) WaitReady(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		st, err := a.Node.AgentStatus(ctx)
		switch {
		case err != nil:
			last = err
		case st.Ready:
			return nil
		default:
			last = fmt.Errorf("not ready; errors: %v", st.Errors)
		}
		select {
		case <-a.done:
			return fmt.Errorf("agent on %s exited before ready (%v); log tail:\n%s", a.Node.Name, a.waitErr, tail(a.Logs(), 40))
		case <-ctx.Done():
			return fmt.Errorf("agent on %s not ready: %v: %w; log tail:\n%s", a.Node.Name, last, ctx.Err(), tail(a.Logs(), 40))
		case <-t.C:
		}
	}
}

// AgentStatus reads GET /v1/status from the node's agent API socket.
func (n *Node) AgentStatus(ctx context.Context) (*api.Status, error) {
	var st api.Status
	if err := n.AgentGet(ctx, api.PathStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// AgentGet does GET path on the node's agent API socket and decodes the JSON
// answer into out. A context without deadline gets DefaultRequestTimeout.
func (n *Node) AgentGet(ctx context.Context, path string, out any) error {
	ctx, cancel := withDefaultTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	if err := agentGet(ctx, n.StateDir, path, out); err != nil {
		return fmt.Errorf("agent api %s on %s: %w", path, n.Name, err)
	}
	return nil
}

// agentGet GETs path from the agent API of state directory stateDir and
// decodes the JSON answer into out.
func agentGet(ctx context.Context, stateDir, path string, out any) error {
	sock := filepath.Join(stateDir, api.SocketName)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		// Agents restart; never reuse a connection to a dead one.
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://unix"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
