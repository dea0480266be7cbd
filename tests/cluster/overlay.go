package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// OverlayDir is the committed test overlay (tests/cluster/overlay),
// relative to the repository.
const OverlayDir = "tests/cluster/overlay"

// WriteOverlay writes the run's kustomization into dir and returns dir: the
// committed overlay (OverlayDir in repo) plus the run's own paths, each
// commented in the file. With apiServer set ("172.31.0.10:6443"), the
// ConfigMap gives the agent the API server's real address, as the README
// says for clusters without kube-proxy.
func (c *Cluster) WriteOverlay(dir, repo, apiServer string) (string, error) {
	abs, err := filepath.Abs(filepath.Join(repo, OverlayDir))
	if err != nil {
		return "", err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	// kustomize takes a base by a relative path only.
	base, err := filepath.Rel(absDir, abs)
	if err != nil {
		return "", err
	}
	k := fmt.Sprintf(`# The run's layer over %[7]s (see its comments).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %[1]s
patches:
  # Host paths of this run:
  # - cgroup: this host is a hybrid cgroup v1/v2 one, its cgroup2 at
  #   /sys/fs/cgroup/unified (daemonset.yaml says to change the path so on
  #   such hosts); and the run's subtree of it, which holds the node's
  #   processes and pods (the kubelet's --cgroup-root), so that socket LB
  #   attached there cannot translate the connections of the machine's
  #   other processes (CI and other test runs share the machine).
  # - cni-conf, cni-bin: the CNI directories the node's containerd uses,
  #   owned by the run, so the machine's /etc/cni/net.d is never touched.
  # - state: the agent's state directory (its sockets, identities), and
  #   below, the bpf root: the run's, since /var/run/sluice and
  #   /sys/fs/bpf/sluice would be shared by two runs on one machine (an
  #   agent locks its bpf root) and could not be told apart from another
  #   run's when cleaning up after a killed one.
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata:
        name: sluice
        namespace: sluice-system
      spec:
        template:
          spec:
            volumes:
              - name: cgroup
                hostPath:
                  path: %[2]s
              - name: cni-conf
                hostPath:
                  path: %[3]s
              - name: cni-bin
                hostPath:
                  path: %[4]s
              - name: state
                hostPath:
                  path: %[5]s
  # install-cni writes the state directory's host path into the CNI
  # configuration (sluice-cni runs on the host), and the agent pins under
  # the run's bpf root.
  - target:
      kind: DaemonSet
      name: sluice
    patch: |-
      - op: test
        path: /spec/template/spec/initContainers/1/command/4
        value: --state-dir=/var/run/sluice
      - op: replace
        path: /spec/template/spec/initContainers/1/command/4
        value: --state-dir=%[5]s
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --bpf-root=%[6]s
`, base, c.Node.CgroupRoot, c.CNIConfDir, c.CNIBinDir, c.Node.StateDir, c.Node.BPFRoot, abs)
	if apiServer != "" {
		host, port, err := splitHostPort(apiServer)
		if err != nil {
			return "", err
		}
		k += fmt.Sprintf(`  # No kube-proxy: the API server's real address, as the README says.
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: sluice-config
        namespace: sluice-system
      data:
        kubernetes-service-host: %q
        kubernetes-service-port: %q
`, host, port)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

func splitHostPort(hp string) (string, string, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", "", fmt.Errorf("API server address %q: %w", hp, err)
	}
	return host, port, nil
}
