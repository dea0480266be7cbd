package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/xds"
)

// A node's real Envoy, started the way the DaemonSet starts it: the
// DaemonSet's own bootstrap (daemonset/envoy-configmap.yaml) and the
// envoy container's own command line (daemonset/daemonset.yaml), with
// only what a simulated node must have of its own changed: the agent's
// socket lives in the node's state directory, and the admin interface
// gets a free port on the node's loopback.

// Files of the DaemonSet Envoy is started from, in the repository.
const (
	EnvoyConfigMapFile = "daemonset/envoy-configmap.yaml"
	DaemonSetFile      = "daemonset/daemonset.yaml"
	// envoyConfigKey is the bootstrap's key in the ConfigMap, and
	// envoyContainer the DaemonSet's Envoy container.
	envoyConfigKey = "envoy.yaml"
	envoyContainer = "envoy"
	// envoyReadyTimeout bounds how long Envoy may take to serve its admin
	// interface after starting.
	envoyReadyTimeout = 30 * time.Second
)

// daemonSetSocket is the agent's xDS socket as the DaemonSet's bootstrap
// names it: the agent's default state directory (mounted into the Envoy
// container at the same path) and pkg/xds's DefaultSocketName.
var daemonSetSocket = path.Join(api.DefaultStateDir, xds.DefaultSocketName)

// EnvoyBootstrap is the bootstrap of the DaemonSet's ConfigMap
// (configMapYAML, the contents of daemonset/envoy-configmap.yaml) for a
// node whose agent has state directory stateDir: every pipe address on
// the DaemonSet's socket moved to the same socket in stateDir, and the
// admin interface on 127.0.0.1:adminPort. The result is JSON (which Envoy
// reads as YAML). Bad input is an error naming the file and the field.
func EnvoyBootstrap(configMapYAML []byte, stateDir string, adminPort uint16) ([]byte, error) {
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(configMapYAML, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvoyConfigMapFile, err)
	}
	if cm.Kind != "ConfigMap" {
		return nil, fmt.Errorf("%s: kind is %q, not ConfigMap", EnvoyConfigMapFile, cm.Kind)
	}
	boot, ok := cm.Data[envoyConfigKey]
	if !ok {
		return nil, fmt.Errorf("%s: no data.%s", EnvoyConfigMapFile, envoyConfigKey)
	}
	js, err := yaml.YAMLToJSON([]byte(boot))
	if err != nil {
		return nil, fmt.Errorf("%s: data.%s: %w", EnvoyConfigMapFile, envoyConfigKey, err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("%s: data.%s as an Envoy bootstrap: %w", EnvoyConfigMapFile, envoyConfigKey, err)
	}
	socket := filepath.Join(stateDir, xds.DefaultSocketName)
	moved := 0
	for _, c := range b.GetStaticResources().GetClusters() {
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				if p := e.GetEndpoint().GetAddress().GetPipe(); p != nil && p.GetPath() == daemonSetSocket {
					p.Path = socket
					moved++
				}
			}
		}
	}
	if moved == 0 {
		return nil, fmt.Errorf("%s: data.%s: no static cluster reaches the agent on %s", EnvoyConfigMapFile, envoyConfigKey, daemonSetSocket)
	}
	sa := b.GetAdmin().GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("%s: data.%s: admin.address.socket_address is not set", EnvoyConfigMapFile, envoyConfigKey)
	}
	// The admin API can stop Envoy: it stays on loopback, as in the
	// DaemonSet.
	sa.Address = "127.0.0.1"
	sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(adminPort)}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&b)
	if err != nil {
		return nil, fmt.Errorf("encode the bootstrap: %w", err)
	}
	return out, nil
}

// EnvoyArgs are the DaemonSet's Envoy command line (daemonSetYAML, the
// contents of daemonset/daemonset.yaml; its command and args) for node
// nodeName with the bootstrap at configPath: $(NODE_NAME) is the node's
// name, --config-path configPath; the program itself is left out (the
// caller runs its own binary).
func EnvoyArgs(daemonSetYAML []byte, nodeName, configPath string) ([]string, error) {
	var ds struct {
		Kind string `json:"kind"`
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name    string   `json:"name"`
						Command []string `json:"command"`
						Args    []string `json:"args"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(daemonSetYAML, &ds); err != nil {
		return nil, fmt.Errorf("%s: %w", DaemonSetFile, err)
	}
	if ds.Kind != "DaemonSet" {
		return nil, fmt.Errorf("%s: kind is %q, not DaemonSet", DaemonSetFile, ds.Kind)
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name != envoyContainer {
			continue
		}
		// command [envoy], or the image's entrypoint: what follows the
		// program is Envoy's command line.
		args := slices.Concat(c.Command[min(1, len(c.Command)):], c.Args)
		i := slices.Index(args, "--config-path")
		if i < 0 || i+1 >= len(args) {
			return nil, fmt.Errorf("%s: container %s: no --config-path in its args", DaemonSetFile, envoyContainer)
		}
		args[i+1] = configPath
		for j, a := range args {
			args[j] = strings.ReplaceAll(a, "$(NODE_NAME)", nodeName)
		}
		return args, nil
	}
	return nil, fmt.Errorf("%s: no container %q in spec.template.spec.containers", DaemonSetFile, envoyContainer)
}

// RepoFile is the path of rel (slash-separated, from the repository's
// root) found from the working directory upwards: tests run in their
// package's directory, inside the repository.
func RepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("find %s in the repository at %s: %w", rel, dir, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find %s: no go.mod above the working directory", rel)
		}
		dir = parent
	}
}

// Envoy is a real Envoy process in a node's network namespace, started
// from the DaemonSet's bootstrap and command line (see StartEnvoy).
type Envoy struct {
	*Process
	// AdminPort is its admin interface's port on the node's loopback.
	AdminPort uint16
	// LogPath is the file holding Envoy's output; ConfigPath its bootstrap.
	LogPath, ConfigPath string
}

// StartEnvoy starts bin (an envoy binary) as the node's shared Envoy, as
// the DaemonSet's envoy container runs it (see EnvoyBootstrap, EnvoyArgs),
// and returns once its admin interface answers. It takes its listeners
// from the node's agent over ADS on the state directory's xds.sock. Like
// workloads it runs in the node's namespace and host cgroup, dies with
// the test process, and is killed by Stop or the cluster's cleanup.
func (n *Node) StartEnvoy(bin string) (*Envoy, error) {
	e, err := n.startEnvoy(bin)
	if err != nil {
		return nil, fmt.Errorf("start envoy %s on %s: %w", bin, n.Name, err)
	}
	return e, nil
}

func (n *Node) startEnvoy(bin string) (*Envoy, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, err
	}
	var files [2][]byte
	for i, rel := range []string{EnvoyConfigMapFile, DaemonSetFile} {
		p, err := RepoFile(rel)
		if err != nil {
			return nil, err
		}
		if files[i], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	port, err := n.freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	boot, err := EnvoyBootstrap(files[0], n.StateDir, port)
	if err != nil {
		return nil, err
	}
	c := n.cluster
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("cluster is cleaned up")
	}
	n.envoys++
	k := n.envoys
	c.mu.Unlock()
	e := &Envoy{
		AdminPort:  port,
		ConfigPath: filepath.Join(n.StateDir, fmt.Sprintf("envoy-%d.json", k)),
		LogPath:    filepath.Join(n.StateDir, fmt.Sprintf("envoy-%d.log", k)),
	}
	if err := os.WriteFile(e.ConfigPath, boot, 0o644); err != nil {
		return nil, err
	}
	args, err := EnvoyArgs(files[1], n.Name, e.ConfigPath)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(e.LogPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd, release, err := n.command(context.Background(), bin, args...)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	release()
	if err != nil {
		return nil, err
	}
	e.Process = &Process{h: &n.Host, cmd: cmd, done: make(chan struct{}), what: "envoy"}
	c.track(e.Process)
	go func() {
		e.waitErr = cmd.Wait()
		close(e.done)
	}()
	c.logf("envoy on %s: pid %d, admin 127.0.0.1:%d, log %s", n.Name, cmd.Process.Pid, port, e.LogPath)
	if err := e.waitAdmin(); err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("%w; log tail:\n%s", err, tail(e.Logs(), 40))
	}
	return e, nil
}

// freeLoopbackPort is a port nothing listens on in the node's namespace
// now.
func (n *Node) freeLoopbackPort() (uint16, error) {
	var port uint16
	err := n.InNetns(func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		port = uint16(ln.Addr().(*net.TCPAddr).Port)
		return nil
	})
	return port, err
}

// Logs returns Envoy's output so far.
func (e *Envoy) Logs() string {
	b, err := os.ReadFile(e.LogPath)
	if err != nil {
		return fmt.Sprintf("(read envoy log %s: %v)", e.LogPath, err)
	}
	return string(b)
}

// waitAdmin waits until the admin interface answers /server_info (as the
// DaemonSet's liveness probe asks), or Envoy exits.
func (e *Envoy) waitAdmin() error {
	ctx, cancel := context.WithTimeout(context.Background(), envoyReadyTimeout)
	defer cancel()
	var last error
	for {
		if _, last = e.Admin(ctx, "/server_info"); last == nil {
			return nil
		}
		select {
		case <-e.done:
			if e.waitErr == nil {
				return errors.New("envoy exited with status 0")
			}
			return fmt.Errorf("envoy exited: %w", e.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("envoy's admin interface does not answer after %s: %w", envoyReadyTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Admin GETs path from Envoy's admin interface (in the node's namespace)
// and returns the body of a 200 answer.
func (e *Envoy) Admin(ctx context.Context, p string) ([]byte, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	return NetnsGet(ctx, e.h.NetnsPath, fmt.Sprintf("http://127.0.0.1:%d%s", e.AdminPort, p))
}

// Listening are the ports of Envoy's active listeners (admin /listeners),
// sorted.
func (e *Envoy) Listening(ctx context.Context) ([]uint16, error) {
	body, err := e.Admin(ctx, "/listeners?format=json")
	if err != nil {
		return nil, err
	}
	var ls adminv3.Listeners
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &ls); err != nil {
		return nil, fmt.Errorf("envoy admin /listeners: %w", err)
	}
	var ports []uint16
	for _, l := range ls.GetListenerStatuses() {
		if p := l.GetLocalAddress().GetSocketAddress().GetPortValue(); p != 0 {
			ports = append(ports, uint16(p))
		}
	}
	slices.Sort(ports)
	return ports, nil
}

// EnvEnvoy names the envoy binary the L7 end-to-end tests run instead of
// the test proxy (make test-envoy sets it).
const EnvEnvoy = "SLUICE_ENVOY"

// EnvoyBinary is the envoy binary $SLUICE_ENVOY names, "" when it is
// unset, and an error naming the variable when it names no executable
// file: a wrong path fails, it never falls back to the test proxy.
func EnvoyBinary() (string, error) {
	v := os.Getenv(EnvEnvoy)
	if v == "" {
		return "", nil
	}
	p, err := exec.LookPath(v)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound):
		return "", fmt.Errorf("%s=%s: no such file", EnvEnvoy, v)
	case err != nil:
		return "", fmt.Errorf("%s=%s: %w", EnvEnvoy, v, err)
	}
	return filepath.Abs(p)
}
