package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginType is the plugin's "type" in a network configuration and the
// name of its binary in the CNI bin directory.
const PluginType = "sluice-cni"

// Defaults of the plugin's configuration keys.
const (
	DefaultStateDir = "/var/run/sluice"
	DefaultTimeout  = 30 * time.Second
)

// socketName is the agent's API socket inside its state directory
// (api.SocketName; not imported, to keep the plugin binary small).
const socketName = "sluice.sock"

// Config is the plugin's entry in the network configuration list.
type Config struct {
	types.PluginConf
	// StateDir is the agent's --state-dir, holding its API socket.
	StateDir string `json:"stateDir,omitempty"`
	// Timeout bounds the wait for the agent, e.g. "30s": past it ADD
	// fails and the kubelet retries.
	Timeout string `json:"timeout,omitempty"`

	timeout time.Duration
}

// Socket is the agent's API socket.
func (c *Config) Socket() string { return filepath.Join(c.StateDir, socketName) }

// parseConfig reads the plugin's configuration from stdin data, with its
// prevResult parsed for the configuration's CNI version.
func parseConfig(data []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "sluice-cni: network configuration on stdin is not JSON", err.Error())
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(c.StateDir) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("sluice-cni: \"stateDir\" %q must be an absolute path (the agent's --state-dir)", c.StateDir), "")
	}
	c.timeout = DefaultTimeout
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("sluice-cni: \"timeout\" %q is not a positive duration such as \"30s\"", c.Timeout), "")
		}
		c.timeout = d
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "sluice-cni: prevResult: "+err.Error(), "")
	}
	return c, nil
}

// podArgs are the Kubernetes keys of CNI_ARGS.
type podArgs struct {
	Namespace, Name, UID, InfraContainerID string
}

// parseArgs reads CNI_ARGS ("K=V;K=V"). Unknown keys are ignored whether
// or not the runtime sets IgnoreUnknown: the kubelet and runtimes add keys
// over time, and refusing them would fail every pod.
func parseArgs(s string) (podArgs, error) {
	var a podArgs
	if s == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return a, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("sluice-cni: CNI_ARGS entry %q is not KEY=VALUE", kv), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.InfraContainerID = v
		}
	}
	return a, nil
}
