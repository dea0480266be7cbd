package apiserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KubernetesVersion is the kube-apiserver the tests run: the release whose
// k8s.io/* libraries go.mod requires (client-go v0.37.2 ↔ v1.37.2).
const KubernetesVersion = "v1.37.2"

// StagingVersion is the published version of the k8s.io/* staging modules
// (k8s.io/api, k8s.io/apiserver, ...) cut from KubernetesVersion: v1.X.Y is
// v0.X.Y.
func StagingVersion() string { return "v0" + strings.TrimPrefix(KubernetesVersion, "v1") }

const (
	// FallbackCacheDir is the cache directory when SLUICE_CACHE is unset.
	FallbackCacheDir = "/var/cache/sluice"
	// StampFile, in the binaries' directory, records what was built and
	// how long it took.
	StampFile = "VERSIONS"
	// EnvBinDir names a directory holding kube-apiserver and etcd, for
	// binaries from elsewhere than the cache.
	EnvBinDir = "SLUICE_APISERVER_BIN_DIR"
)

// DefaultCacheDir is $SLUICE_CACHE, else FallbackCacheDir.
func DefaultCacheDir() string {
	if d := os.Getenv("SLUICE_CACHE"); d != "" {
		return d
	}
	return FallbackCacheDir
}

// BinDir is where tools/apiserver puts the binaries under cache.
func BinDir(cache string) string {
	return filepath.Join(cache, "apiserver", KubernetesVersion)
}

// Binaries are the paths of the two executables.
type Binaries struct {
	APIServer, Etcd string
}

// FindBinaries returns the binaries in dir, or an error naming what is
// missing.
func FindBinaries(dir string) (Binaries, error) {
	b := Binaries{APIServer: filepath.Join(dir, "kube-apiserver"), Etcd: filepath.Join(dir, "etcd")}
	for _, p := range []string{b.APIServer, b.Etcd} {
		st, err := os.Stat(p)
		if err != nil {
			return b, fmt.Errorf("no %s: %w", filepath.Base(p), err)
		}
		if st.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%s is not executable", p)
		}
	}
	return b, nil
}

// LocateBinaries finds the binaries in $SLUICE_APISERVER_BIN_DIR if set,
// else in the cache directory tools/apiserver builds into.
func LocateBinaries() (Binaries, error) {
	dir := os.Getenv(EnvBinDir)
	if dir == "" {
		dir = BinDir(DefaultCacheDir())
	}
	b, err := FindBinaries(dir)
	if err != nil {
		return b, fmt.Errorf("kube-apiserver %s and etcd not found in %s (%w): build them with `make apiserver-bins` (go run ./tools/apiserver: 5-8 minutes the first time on 2 cores), or run the tests with `make test-apiserver`, which does both",
			KubernetesVersion, dir, err)
	}
	return b, nil
}
