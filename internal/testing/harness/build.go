package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables that let `make test` hand prebuilt binaries to the
// tests instead of having each test process build them.
const (
	// EnvAgentBin is the path of a prebuilt sluice-agent.
	EnvAgentBin = "SLUICE_AGENT_BIN"
	// EnvBinDir is a directory of prebuilt binaries named after their package's last element.
	EnvBinDir = "SLUICE_BIN_DIR"
)

// BuildTags are the build tags of the binaries Build makes, as the
// Makefile's GOTAGS: see there why.
const BuildTags = "grpcnotrace"

// buildTimeout bounds one `go build`.
const buildTimeout = 5 * time.Minute

var builds struct {
	mu   sync.Mutex
	dir  string
	byPk map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BuildBinary returns the path of the binary of the main package pkg (an
// import path such as "github.com/sluice-net/sluice/cmd/sluice-agent"),
// building it once per process; it fails the test when the build fails.
// A prebuilt binary is used instead when $SLUICE_AGENT_BIN is set (for the
// agent) or $SLUICE_BIN_DIR holds a file named like the package.
func BuildBinary(tb testing.TB, pkg string) string {
	tb.Helper()
	p, err := Build(context.Background(), pkg)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return p
}

// Build is BuildBinary for callers without a testing.TB (the demo).
func Build(ctx context.Context, pkg string) (string, error) {
	name := path.Base(pkg)
	if name == "sluice-agent" {
		if p := os.Getenv(EnvAgentBin); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%s=%s: %w", EnvAgentBin, p, err)
			}
			return p, nil
		}
	}
	if dir := os.Getenv(EnvBinDir); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	builds.mu.Lock()
	if builds.byPk == nil {
		builds.byPk = map[string]*buildResult{}
	}
	r := builds.byPk[pkg]
	if r == nil {
		r = &buildResult{}
		builds.byPk[pkg] = r
	}
	if builds.dir == "" {
		d, err := os.MkdirTemp("", GlobalPrefix+"-bin-")
		if err != nil {
			builds.mu.Unlock()
			return "", fmt.Errorf("create build dir: %w", err)
		}
		builds.dir = d
	}
	dir := builds.dir
	builds.mu.Unlock()

	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, buildTimeout)
		defer cancel()
		out := filepath.Join(dir, name)
		// The Makefile's GOTAGS: the binaries tests measure are the ones
		// make build makes.
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", BuildTags, "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build %s: %w:\n%s", pkg, err, strings.TrimSpace(string(b)))
			return
		}
		r.path = out
	})
	return r.path, r.err
}

// CleanupBuilds removes the binaries Build made in this process.
func CleanupBuilds() error {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir == "" {
		return nil
	}
	err := os.RemoveAll(builds.dir)
	builds.dir, builds.byPk = "", nil
	if err != nil {
		return fmt.Errorf("remove build dir: %w", err)
	}
	return nil
}

// Main is a complete TestMain for packages using the harness:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// It runs a requested workload (and exits), removes leftovers of aborted
// runs when running as root, runs the tests and removes built binaries.
func Main(m *testing.M) { MainThen(m, nil) }

// MainThen is Main that calls after (if not nil) once the tests have run,
// for what a package made for all its tests (tests/cluster's images).
func MainThen(m *testing.M, after func()) {
	RunWorkloadIfRequested()
	if os.Geteuid() == 0 {
		if removed, err := CleanupStale(); err != nil {
			fmt.Fprintf(os.Stderr, "harness: cleaning up stale runs: %v\n", err)
		} else if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "harness: removed leftovers of aborted runs: %s\n", strings.Join(removed, ", "))
		}
	}
	code := m.Run()
	if after != nil {
		after()
	}
	if err := CleanupBuilds(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
	}
	os.Exit(code)
}
