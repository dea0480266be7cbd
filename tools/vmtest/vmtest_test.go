package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
)

func TestMatrixLoads(t *testing.T) {
	m, err := loadMatrix("../../vagrant/matrix.yaml")
	require.NoError(t, err)
	for _, id := range []string{"6.1/amd64", "6.12/amd64", "6.1/arm64", "host/amd64"} {
		name, arch, _ := strings.Cut(id, "/")
		_, err := m.find(name, arch)
		require.NoError(t, err, id)
	}
	for _, s := range []string{"datapath", "smoke", "full"} {
		require.NotEmpty(t, m.Suites[s], "suite %s", s)
	}
}

func TestMatrixRejectsMissingFeature(t *testing.T) {
	m := &Matrix{Kernels: []Kernel{{Name: "6.1", Arch: "amd64", Features: map[string]bool{"tcx": false}}}}
	require.ErrorContains(t, m.validate(), "features lacks ringbuf")
	m.Kernels[0].Features = map[string]bool{"tcx-links": true}
	for _, f := range datapath.KernelFeatures {
		m.Kernels[0].Features[f.Name] = true
	}
	require.ErrorContains(t, m.validate(), `unknown feature "tcx-links"`)
}

// The README's "Kernel support" table states, per kernel column, what the
// matrix expects of that kernel: the two must agree, so that the VM runs,
// which check the matrix, verify the table.
func TestREADMEKernelTableMatchesMatrix(t *testing.T) {
	m, err := loadMatrix("../../vagrant/matrix.yaml")
	require.NoError(t, err)
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, table, ok := strings.Cut(string(b), "### Kernel support")
	require.True(t, ok, "README has a Kernel support section")
	columns := map[string]string{"6.1": "6.1", "6.12": "6.12", "6.18": "host"}
	var header []string
	rows := 0
	name := regexp.MustCompile("`([a-z-]+)`")
	for _, l := range strings.Split(table, "\n") {
		if !strings.HasPrefix(l, "|") {
			if header != nil {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		nm := name.FindStringSubmatch(cells[0])
		require.NotNil(t, nm, "row %q names its probe in backquotes", cells[0])
		kf, ok := datapath.LookupKernelFeature(nm[1])
		require.True(t, ok, "row %q: unknown feature %s", cells[0], nm[1])
		require.Equal(t, kf.MinKernel, cells[1], "%s: minimum kernel", kf.Name)
		rows++
		for i, h := range header {
			kname, ok := columns[h]
			if !ok {
				continue
			}
			k, err := m.find(kname, "amd64")
			require.NoError(t, err)
			want := "no"
			if k.Features[kf.Name] {
				want = "yes"
			}
			require.True(t, strings.HasPrefix(cells[i], want), "README says %s of %s on %s; vagrant/matrix.yaml says %s", cells[i], kf.Name, h, want)
		}
	}
	require.Equal(t, len(datapath.KernelFeatures), rows, "one row per probed feature")
}

func TestParseGoTestOutput(t *testing.T) {
	out := `=== RUN   TestA
--- PASS: TestA (0.10s)
=== RUN   TestB
    b_test.go:12: kernel lacks tcx: legacy tc covers it
--- SKIP: TestB (0.00s)
=== RUN   TestC
=== RUN   TestC/one
    c_test.go:3: boom
=== RUN   TestC/two
    c_test.go:9: kernel lacks bpf-sock-destroy
=== RUN   TestC/three
--- FAIL: TestC (0.20s)
    --- FAIL: TestC/one (0.10s)
    --- SKIP: TestC/two (0.10s)
    --- PASS: TestC/three (0.10s)
FAIL`
	var b binResult
	b.parse(strings.Split(out, "\n"))
	require.Equal(t, 2, b.pass)
	require.Equal(t, 2, b.skip)
	require.Equal(t, 2, b.fail)
	require.Equal(t, []string{"TestB: kernel lacks tcx: legacy tc covers it", "TestC/two: kernel lacks bpf-sock-destroy"}, b.skips)
	require.Equal(t, []string{"TestC", "TestC/one"}, b.fails)
}

func TestCPIO(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIO(&buf)
	c.file("a/b/c", 0o644, []byte("hello"))
	c.symlink("bin/true", "/init")
	require.NoError(t, c.close())
	s := buf.String()
	require.Zero(t, buf.Len()%4, "entries are 4-byte aligned")
	for _, name := range []string{"a\x00", "a/b\x00", "a/b/c\x00", "hello", "bin/true\x00", "/init", "TRAILER!!!\x00"} {
		require.Contains(t, s, name)
	}
	require.Equal(t, 6, strings.Count(s, "070701"), "a, a/b, a/b/c, bin, bin/true, trailer")
}

// A foreign-architecture guest has no 9p root: a package's testdata (the
// pinned-layout golden file, fuzz corpora) travels in the initramfs at its
// host path, beside the test binary's working directory.
func TestAddTreeTakesTestdata(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "testdata", "fuzz", "F"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "testdata", "a.golden"), []byte("a"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "testdata", "fuzz", "F", "seed"), []byte("b"), 0o644))
	files := map[string]string{}
	require.NoError(t, addTree(files, filepath.Join(dir, "testdata")))
	require.NoError(t, addTree(files, filepath.Join(dir, "missing")), "a package without testdata adds nothing")
	golden, seed := filepath.Join(dir, "testdata", "a.golden"), filepath.Join(dir, "testdata", "fuzz", "F", "seed")
	require.Equal(t, map[string]string{strings.TrimPrefix(golden, "/"): golden, strings.TrimPrefix(seed, "/"): seed}, files)
}

// The guest covers /tmp and /root with tmpfs; a clone or cache there is
// kept visible, and a path inside another kept one needs no mount of its own.
func TestKeepPaths(t *testing.T) {
	got := keepPaths([]string{"/tmp/clone", "/tmp/cache/vm/runs/6.1-amd64", "/tmp/cache/vm/runs/6.1-amd64/bin", "/root/go/pkg/mod", "/tmp/clone/"})
	want := []string{"/root/go/pkg/mod", "/tmp/cache/vm/runs/6.1-amd64", "/tmp/clone"}
	require.Equal(t, want, got)
}

// runOutput is what the runner collects from a run of test binaries, each
// printing out (go test -v output) and exiting 0: events as the guest
// reports them and the console lines.
func runOutput(outs map[string]string, order ...string) ([]event, []string) {
	var events []event
	var lines []string
	for _, name := range order {
		events = append(events, event{kind: "start", args: []string{name}, line: len(lines)})
		lines = append(lines, strings.Split(outs[name], "\n")...)
		events = append(events, event{kind: "exit", args: []string{name, "0", "1.0"}, line: len(lines)})
	}
	return append(events, event{kind: "done"}), lines
}

// go test prints a warning and exits 0 when -run matches no test: a
// renamed test would silently drop out of the suite that names it. A
// suite's pattern that matches nothing in its package fails the run,
// naming both.
func TestPatternMatchingNoTestFails(t *testing.T) {
	const noTests = "testing: warning: no tests to run\nPASS"
	const ran = "=== RUN   TestConnectivity\n--- PASS: TestConnectivity (1.00s)\nPASS"
	for _, c := range []struct {
		name          string
		run           string // --run
		datapath, e2e string // the packages' output
		ok            bool
		printed       []string
	}{
		{name: "the suite's pattern matches nothing", datapath: ran, e2e: noTests, printed: []string{
			"tests/e2e                  NO TESTS",
			"ERROR:    tests/e2e: the suite's -run pattern '^(TestConnectivity|TestRenamed)$' matched no test",
			"result:   FAIL 6.1/amd64",
		}},
		{name: "the suite's pattern matches", datapath: ran, e2e: ran, ok: true},
		// A package without a pattern runs all its tests; if it has none,
		// that is not a pattern's fault.
		{name: "no pattern, no tests", datapath: noTests, e2e: ran, ok: true},
		// --run applies to every package of the suite: it must match in
		// one of them, not in each.
		{name: "--run matches in one package", run: "TestConnectivity", datapath: noTests, e2e: ran, ok: true},
		{name: "--run matches nothing", run: "TestNoSuchTest", datapath: noTests, e2e: noTests, printed: []string{
			"ERROR:    --run 'TestNoSuchTest' matched no test in any package (pkg/datapath, tests/e2e)",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &result{kernel: Kernel{Name: "6.1", Arch: "amd64", Package: "linux-image"}, suite: "smoke", run: c.run, bins: []*binResult{
				{name: "pkg/datapath"},
				{name: "tests/e2e", pattern: "^(TestConnectivity|TestRenamed)$"},
			}}
			r.collect(runOutput(map[string]string{"pkg/datapath": c.datapath, "tests/e2e": c.e2e}, "pkg/datapath", "tests/e2e"))
			require.Equal(t, c.ok, r.ok())
			require.Equal(t, c.ok, strings.HasPrefix(r.oneLine(), "PASS"))
			var out bytes.Buffer
			r.print(&out)
			for _, p := range c.printed {
				require.Contains(t, out.String(), p)
			}
		})
	}
}

// A module the matrix marks optional ("name?") is skipped where the kernel
// has no such module (nft_counter is part of nf_tables from 5.15 on); a
// required one that is missing fails the run, naming it.
func TestOptionalModules(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kernel"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/net/core/builtin_one.ko\n"), 0o644))
	mods, err := resolveModules(dir, []string{"nft_counter?", "builtin_one"})
	require.NoError(t, err)
	require.Empty(t, mods)
	_, err = resolveModules(dir, []string{"nft_counter"})
	require.ErrorContains(t, err, "kernel module nft_counter is neither built in nor in")
}
