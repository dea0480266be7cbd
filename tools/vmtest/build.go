package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// testBinary is one compiled test package.
type testBinary struct {
	name string // e.g. pkg/datapath
	path string // the binary on the host
	dir  string // the package's directory (the tests' working directory)
	run  string // -test.run pattern
	args []string
}

// goCmd runs the go tool, niced: builds share the machine with other work.
func goCmd(repo, arch string, args ...string) *exec.Cmd {
	cmd := exec.Command("nice", append([]string{"-n", "10", "go"}, args...)...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	return cmd
}

func runGo(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args[3:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// buildTests compiles the suite's test packages for arch into dir/tests
// (go test -c: they are only executed in the VM).
func buildTests(repo, arch, dir string, suite []SuitePackage) ([]testBinary, error) {
	type pkg struct {
		importPath, dir, run string
		args                 []string
	}
	var pkgs []pkg
	seen := map[string]bool{}
	for _, sp := range suite {
		out, err := runGo(goCmd(repo, arch, "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}", sp.Package))
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			ip, d, ok := strings.Cut(l, " ")
			if !ok || seen[ip] {
				continue
			}
			seen[ip] = true
			pkgs = append(pkgs, pkg{ip, d, sp.Run, sp.Args})
		}
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("the suite has no test packages")
	}
	modPath, err := runGo(goCmd(repo, arch, "list", "-m"))
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSpace(string(modPath)) + "/"
	out := filepath.Join(dir, "tests")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var bins []testBinary
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.importPath, prefix)
		bin := filepath.Join(out, strings.ReplaceAll(name, "/", "_")+".test")
		if _, err := runGo(goCmd(repo, arch, "test", "-c", "-o", bin, p.importPath)); err != nil {
			return nil, err
		}
		bins = append(bins, testBinary{name: name, path: bin, dir: p.dir, run: p.run, args: p.args})
	}
	return bins, nil
}

// buildBinaries builds what the end-to-end tests run (SLUICE_BIN_DIR) and
// the VM's init.
func buildBinaries(repo, arch, dir string, agent bool) (binDir, initPath string, err error) {
	binDir = filepath.Join(dir, "bin")
	initPath = filepath.Join(dir, "vminit")
	if _, err := runGo(goCmd(repo, arch, "build", "-o", initPath, "./tools/vmtest/vminit")); err != nil {
		return "", "", err
	}
	if agent {
		if _, err := runGo(goCmd(repo, arch, "build", "-o", binDir+"/", "./cmd/sluice-agent", "./cmd/sluice", "./cmd/sluice-cni")); err != nil {
			return "", "", err
		}
	}
	return binDir, initPath, nil
}
