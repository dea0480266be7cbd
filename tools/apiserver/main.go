// Command apiserver builds the kube-apiserver and etcd binaries that the
// integration tests in tests/apiserver run (`make test-apiserver`), into a
// cache directory outside the repository, and prints that directory.
//
// Neither binary is in Debian 12's archive. Both are built from the Go
// module proxy, in a throwaway module (outside the repository) that
// requires k8s.io/kubernetes at apiserver.KubernetesVersion:
//
//   - kube-apiserver is k8s.io/kubernetes/cmd/kube-apiserver. The
//     kubernetes module points its k8s.io/* staging modules (k8s.io/api,
//     k8s.io/apiserver, ...) at ./staging/src by replace directives, which
//     the go command ignores in a dependency; the throwaway module replaces
//     each of them with the published version of the same release
//     (v1.37.2 → v0.37.2), which is what the staging directory held.
//   - etcd is go.etcd.io/etcd/server/v3/etcdmain behind a three-line main,
//     at the version the kubernetes module requires (the one its own
//     integration tests run), resolved in the same module graph, so the two
//     builds share most of their dependencies.
//
// With -cluster it builds, besides, what tests/cluster runs a one-node
// cluster with: kubelet, kube-controller-manager, kube-scheduler, kubectl
// and kube-proxy from the same release and module graph, into
// <cache>/cluster/<version> (cluster.BinDir), and prints that directory.
//
// A second run finds the binaries and returns at once; -force rebuilds.
// The build runs at nice 10 (nice 19 with -cluster, the larger build): it
// takes both cores of a small machine for minutes.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/tests/apiserver"
	"github.com/sluice-net/sluice/tests/cluster"
)

const usage = `apiserver: build kube-apiserver and etcd for the integration tests

Usage: go run ./tools/apiserver [flags]

Builds k8s.io/kubernetes/cmd/kube-apiserver ` + apiserver.KubernetesVersion + ` and etcd (the version
that kubernetes release requires) from the Go module proxy into
  <cache>/apiserver/` + apiserver.KubernetesVersion + `/
and prints that directory on stdout; progress goes to stderr. When the
binaries are there already it only prints the directory. With -cluster it
also builds kubelet, kube-controller-manager, kube-scheduler, kubectl and
kube-proxy (tests/cluster, make test-cluster) into
  <cache>/cluster/` + apiserver.KubernetesVersion + `/
and prints that directory instead. The build uses the
go command's usual module and build caches (GOMODCACHE, GOCACHE): set them to
empty directories to measure a cold build.

Flags:
`

func main() {
	fs := flag.NewFlagSet("apiserver", flag.ExitOnError)
	cache := fs.String("cache", apiserver.DefaultCacheDir(), "cache directory (default $SLUICE_CACHE, else "+apiserver.FallbackCacheDir+")")
	force := fs.Bool("force", false, "rebuild even if the binaries are there")
	keep := fs.Bool("keep-work", false, "keep the throwaway module directory (its path is logged)")
	withCluster := fs.Bool("cluster", false, "also build the node binaries of tests/cluster (kubelet, kube-controller-manager, kube-scheduler, kubectl, kube-proxy)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}
	sets := []binSet{apiServerSet}
	if *withCluster {
		sets = append(sets, clusterSet)
	}
	var dir string
	for _, set := range sets {
		var err error
		if dir, err = ensure(set, *cache, *force, *keep); err != nil {
			fmt.Fprintln(os.Stderr, "apiserver:", err)
			os.Exit(1)
		}
	}
	fmt.Println(dir)
}

// binSet is a set of binaries built together into one cache directory.
type binSet struct {
	name string
	// dir is the set's directory under the cache.
	dir func(cache string) string
	// find fails unless every binary of the set is in dir.
	find func(dir string) error
	// packages are the main packages built, relative to the module
	// (./etcd is the module's own etcd main).
	packages []string
	// nice is the build's niceness.
	nice int
}

var apiServerSet = binSet{
	name:     "kube-apiserver and etcd",
	dir:      apiserver.BinDir,
	find:     func(dir string) error { _, err := apiserver.FindBinaries(dir); return err },
	packages: []string{"k8s.io/kubernetes/cmd/kube-apiserver", "./etcd"},
	nice:     10,
}

var clusterSet = binSet{
	name:     strings.Join(cluster.NodeCommands, ", "),
	dir:      cluster.BinDir,
	find:     cluster.FindNodeBinaries,
	packages: kubernetesCommands(cluster.NodeCommands),
	// The larger build, and the one CI adds after the API server's: it
	// yields to everything else on the machine.
	nice: 19,
}

func kubernetesCommands(names []string) []string {
	var pkgs []string
	for _, n := range names {
		pkgs = append(pkgs, "k8s.io/kubernetes/cmd/"+n)
	}
	return pkgs
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "apiserver: "+format+"\n", args...)
}

func ensure(set binSet, cache string, force, keep bool) (string, error) {
	dir := set.dir(cache)
	if !force {
		if err := set.find(dir); err == nil {
			return dir, nil
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no go command in PATH (Go is at /usr/local/go/bin on the project's machines)")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("creating the cache directory: %w (choose another with -cache or SLUICE_CACHE)", err)
	}
	// Nice the whole build: the go commands inherit it.
	// Never raise it: a caller's `nice -n 19` stays.
	if err := lowerPriority(set.nice); err != nil {
		logf("could not lower the build's priority: %v", err)
	}

	work, err := os.MkdirTemp("", "sluice-apiserver-build-")
	if err != nil {
		return "", err
	}
	if keep {
		logf("throwaway module in %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	// Build next to the final directory and rename it into place, so an
	// interrupted build never leaves half a cache entry that looks whole.
	out, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(out)

	start := time.Now()
	b := &builder{goBin: goBin, work: work, set: set}
	if err := b.writeModule(); err != nil {
		return "", err
	}
	resolved := time.Now()
	logf("module graph resolved in %s; building %s (both cores, several minutes cold)", resolved.Sub(start).Round(time.Second), set.name)
	if err := b.build(out); err != nil {
		return "", err
	}
	built := time.Now()
	stamp := fmt.Sprintf("kubernetes %s\netcd %s\ngo %s\nbuilt %s in %s (module graph %s, build %s)\n",
		apiserver.KubernetesVersion, b.etcdVersion, runtime.Version(), built.UTC().Format(time.RFC3339),
		built.Sub(start).Round(time.Second), resolved.Sub(start).Round(time.Second), built.Sub(resolved).Round(time.Second))
	if err := os.WriteFile(filepath.Join(out, apiserver.StampFile), []byte(stamp), 0o644); err != nil {
		return "", err
	}
	if err := os.Chmod(out, 0o755); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(out, dir); err != nil {
		return "", err
	}
	logf("%s %s (etcd %s) in %s: %s", set.name, apiserver.KubernetesVersion, b.etcdVersion, dir,
		strings.TrimSpace(strings.SplitN(stamp, "\n", 4)[3]))
	return dir, nil
}

// lowerPriority sets this process's niceness to nice unless it is nicer
// already.
func lowerPriority(nice int) error {
	// getpriority(2) returns 20-nice, so that the result is never negative.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return err
	}
	if 20-prio >= nice {
		return nil
	}
	return syscall.Setpriority(syscall.PRIO_PROCESS, 0, nice)
}

type builder struct {
	goBin, work string
	set         binSet
	etcdVersion string
}

func (b *builder) goCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(b.goBin, args...)
	cmd.Dir = b.work
	// The module is built as its own main module, whatever GOFLAGS or
	// GOWORK the caller has; CGO off as in Kubernetes' release builds
	// (static binaries, no C toolchain needed).
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	return cmd
}

// stagingRequire matches a requirement on a staging module, which the
// kubernetes module writes as version v0.0.0 and replaces with a directory.
var stagingRequire = regexp.MustCompile(`^\s*(k8s\.io/[a-z0-9-]+) v0\.0\.0\s*$`)

// writeModule writes the throwaway module's go.mod and the etcd main.
func (b *builder) writeModule() error {
	// The kubernetes release's go.mod, from the module cache.
	cmd := b.goCmd("mod", "download", "-json", "k8s.io/kubernetes@"+apiserver.KubernetesVersion)
	cmd.Dir = os.TempDir() // outside any module
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("downloading k8s.io/kubernetes@%s's go.mod: %w", apiserver.KubernetesVersion, err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil || info.GoMod == "" {
		return fmt.Errorf("go mod download -json: no GoMod in %q", stdout.String())
	}
	k8sMod, err := os.ReadFile(info.GoMod)
	if err != nil {
		return err
	}
	staging, godebug, etcd, err := parseKubernetesMod(k8sMod)
	if err != nil {
		return fmt.Errorf("k8s.io/kubernetes@%s go.mod: %w", apiserver.KubernetesVersion, err)
	}
	b.etcdVersion = etcd

	var gm strings.Builder
	fmt.Fprintf(&gm, "// Generated by sluice's tools/apiserver: builds kube-apiserver and etcd.\nmodule sluice.test/apiserver-build\n\ngo %s\n\n",
		strings.TrimPrefix(runtime.Version(), "go"))
	for _, g := range godebug {
		fmt.Fprintln(&gm, g) // the release's run-time defaults
	}
	fmt.Fprintf(&gm, "\nrequire (\n\tk8s.io/kubernetes %s\n\tgo.etcd.io/etcd/server/v3 %s\n)\n\nreplace (\n",
		apiserver.KubernetesVersion, etcd)
	for _, m := range staging {
		fmt.Fprintf(&gm, "\t%s => %s %s\n", m, m, apiserver.StagingVersion())
	}
	gm.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(b.work, "go.mod"), []byte(gm.String()), 0o644); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(b.work, "etcd"), 0o755); err != nil {
		return err
	}
	// What etcd's own main package does.
	main := "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n"
	if err := os.WriteFile(filepath.Join(b.work, "etcd", "main.go"), []byte(main), 0o644); err != nil {
		return err
	}
	logf("building in %s: k8s.io/kubernetes %s with %d staging modules replaced by their %s releases; etcd %s",
		b.work, apiserver.KubernetesVersion, len(staging), apiserver.StagingVersion(), etcd)
	// Resolve the graph and fill go.sum for the set's packages.
	get := []string{"get", "go.etcd.io/etcd/server/v3/etcdmain@" + etcd}
	for _, p := range b.set.packages {
		if strings.HasPrefix(p, "k8s.io/") {
			get = append(get, p+"@"+apiserver.KubernetesVersion)
		}
	}
	if err := b.goCmd(get...).Run(); err != nil {
		return fmt.Errorf("resolving the module graph: %w", err)
	}
	return nil
}

// parseKubernetesMod returns the staging modules the kubernetes module
// requires (at v0.0.0, replaced by ./staging/src/...), its godebug lines and
// the etcd server version it requires.
func parseKubernetesMod(data []byte) (staging, godebug []string, etcd string, err error) {
	replaced := map[string]bool{}
	var required []string
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		line := s.Text()
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "godebug "):
			godebug = append(godebug, line)
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "./staging/"):
			replaced[f[0]] = true
		case len(f) >= 2 && f[0] == "go.etcd.io/etcd/server/v3":
			etcd = f[1]
		default:
			if m := stagingRequire.FindStringSubmatch(line); m != nil {
				required = append(required, m[1])
			}
		}
	}
	for _, m := range required {
		if !replaced[m] {
			return nil, nil, "", fmt.Errorf("%s is required at v0.0.0 but not replaced by a staging directory", m)
		}
		staging = append(staging, m)
	}
	switch {
	case len(staging) == 0:
		return nil, nil, "", errors.New("no staging modules found")
	case etcd == "":
		return nil, nil, "", errors.New("no go.etcd.io/etcd/server/v3 requirement")
	}
	return staging, godebug, etcd, s.Err()
}

// build compiles the set's binaries into out, stamped with their versions.
func (b *builder) build(out string) error {
	v := apiserver.KubernetesVersion
	major, minor, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s "+
		"-X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean", v, major, minor)
	cmd := b.goCmd(append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", out + "/"}, b.set.packages...)...)
	cmd.Stdout = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: %w", b.set.name, err)
	}
	return nil
}
