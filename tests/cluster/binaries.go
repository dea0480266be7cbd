package cluster

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluice-net/sluice/tests/apiserver"
)

// KubernetesVersion is the release of every Kubernetes binary the cluster
// runs: the API server's (tests/apiserver), which is our client-go's.
const KubernetesVersion = apiserver.KubernetesVersion

// EnvBinDir names a directory holding the node binaries (NodeCommands),
// for binaries from elsewhere than the cache.
const EnvBinDir = "SLUICE_CLUSTER_BIN_DIR"

// NodeCommands are the k8s.io/kubernetes/cmd/... commands the cluster runs
// besides kube-apiserver and etcd (which tools/apiserver builds for
// tests/apiserver into apiserver.BinDir).
var NodeCommands = []string{"kubelet", "kube-controller-manager", "kube-scheduler", "kubectl", "kube-proxy"}

// BinDir is where `go run ./tools/apiserver -cluster` puts NodeCommands
// under cache (a sibling of the API server's directory).
func BinDir(cache string) string {
	return filepath.Join(cache, "cluster", KubernetesVersion)
}

// Binaries are the paths of every executable the cluster runs.
type Binaries struct {
	apiserver.Binaries
	Kubelet, ControllerManager, Scheduler, Kubectl, Proxy string
}

// FindNodeBinaries returns an error naming what of NodeCommands is missing
// from dir.
func FindNodeBinaries(dir string) error {
	for _, c := range NodeCommands {
		st, err := os.Stat(filepath.Join(dir, c))
		if err != nil {
			return fmt.Errorf("no %s: %w", c, err)
		}
		if st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not executable", filepath.Join(dir, c))
		}
	}
	return nil
}

// LocateBinaries finds kube-apiserver and etcd as tests/apiserver does, and
// the node binaries in $SLUICE_CLUSTER_BIN_DIR if set, else in the cache.
func LocateBinaries() (Binaries, error) {
	api, err := apiserver.LocateBinaries()
	if err != nil {
		return Binaries{}, fmt.Errorf("%w (or `make cluster-bins`, which builds every binary the cluster needs)", err)
	}
	dir := os.Getenv(EnvBinDir)
	if dir == "" {
		dir = BinDir(apiserver.DefaultCacheDir())
	}
	if err := FindNodeBinaries(dir); err != nil {
		return Binaries{}, fmt.Errorf("kubelet, kube-controller-manager, kube-scheduler, kubectl and kube-proxy %s not found in %s (%w): build them with `make cluster-bins` (go run ./tools/apiserver -cluster: about 20 minutes the first time on 2 cores, the API server's included), or run `make test-cluster`, which does both",
			KubernetesVersion, dir, err)
	}
	return Binaries{
		Binaries:          api,
		Kubelet:           filepath.Join(dir, "kubelet"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Scheduler:         filepath.Join(dir, "kube-scheduler"),
		Kubectl:           filepath.Join(dir, "kubectl"),
		Proxy:             filepath.Join(dir, "kube-proxy"),
	}, nil
}
