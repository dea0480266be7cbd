package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/tools/vmtest/guest"
)

type runOptions struct {
	kernel, arch, suite, run, accel string
	timeout                         time.Duration
	cpus, memMiB, jobs              int
	repo, cache                     string
	quiet, ciOnly                   bool
}

const root9pTag = "hostroot"

// keepPaths returns the absolute, cleaned paths of ps without those inside
// another of them, outermost first.
func keepPaths(ps []string) []string {
	var clean []string
	for _, p := range ps {
		if p, err := filepath.Abs(p); err == nil {
			clean = append(clean, p)
		}
	}
	slices.Sort(clean)
	var out []string
	for _, p := range clean {
		if len(out) > 0 {
			last := out[len(out)-1]
			if p == last || strings.HasPrefix(p, last+"/") {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// gomodcache is the GOMODCACHE of the tests' environment, if set.
// lockRunDir holds runDir for this process: two runs of one kernel (two
// engineers, or CI beside a person) share the cache, and the second one
// would otherwise empty the first one's run directory under its VM
// ("fork/exec …/tests_e2e.test: no such file or directory"). The lock is
// a file beside the directory, released when the run ends or the process
// dies; a second run waits for it, saying so.
func lockRunDir(runDir string, logf func(string, ...any)) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(runDir), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(runDir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		logf("another vmtest run uses %s: waiting for it to end", runDir)
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", runDir, err)
	}
	return func() { f.Close() }, nil
}

func gomodcache(env []string) []string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "GOMODCACHE="); ok && v != "" {
			return []string{v}
		}
	}
	return nil
}

// runKernel builds the suite, boots the kernel and collects the results.
func runKernel(m *Matrix, o runOptions, stdout io.Writer, logf func(string, ...any)) (*result, error) {
	k, err := m.find(o.kernel, o.arch)
	if err != nil {
		return nil, err
	}
	suiteName := o.suite
	if suiteName == "" {
		suiteName = k.Suite
	}
	if suiteName == "" {
		suiteName = "full"
	}
	suite, ok := m.Suites[suiteName]
	if !ok {
		return nil, fmt.Errorf("unknown suite %q", suiteName)
	}
	if k.Suite != "" && suiteName != k.Suite && suiteName != "datapath" {
		return nil, fmt.Errorf("kernel %s runs the %s suite at most (see vagrant/matrix.yaml), not %s", k.ID(), k.Suite, suiteName)
	}
	if o.timeout == 0 {
		o.timeout = 20 * time.Minute
		switch suiteName {
		case "smoke":
			// Under TCG with two VMs on two cores the smoke suite takes
			// 18-20 min: a margin, so a slow run is not a hung one.
			o.timeout = 30 * time.Minute
		case "full":
			// Under TCG on two cores the full suite took 1 h 32 min on
			// 5.10 (the end-to-end tests most of it).
			o.timeout = 3 * time.Hour
		}
	}
	if o.repo, err = filepath.Abs(o.repo); err != nil {
		return nil, err
	}
	runDir := filepath.Join(o.cache, "runs", strings.ReplaceAll(k.ID(), "/", "-"))
	unlock, err := lockRunDir(runDir, logf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := os.RemoveAll(runDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	res := &result{kernel: k, suite: suiteName, runDir: runDir}

	t0 := time.Now()
	logf("building %s test binaries for %s", suiteName, k.Arch)
	bins, err := buildTests(o.repo, k.Arch, runDir, suite)
	if err != nil {
		return nil, err
	}
	binDir, initPath, err := buildBinaries(o.repo, k.Arch, runDir, k.Arch == "amd64")
	if err != nil {
		return nil, err
	}
	res.buildTime = time.Since(t0)

	// What the tests see beyond a plain root environment: CI (privileged
	// tests fail rather than skip), the features the matrix expects, and
	// the prebuilt agent and CLI.
	var goDir string
	env := []string{"CI=true", testutil.EnvKernelFeatures + "=" + strings.Join(k.ExpectedFeatures(), ",")}
	if k.Arch == "amd64" {
		env = append(env, "SLUICE_BIN_DIR="+binDir)
		// A test that builds a binary itself finds the host's toolchain
		// and module cache (read-only) through the 9p root, never the
		// network; its build cache goes to the guest's tmpfs.
		if gobin, err := exec.LookPath("go"); err == nil {
			if out, err := exec.Command(gobin, "env", "GOMODCACHE").Output(); err == nil {
				env = append(env, "GOMODCACHE="+strings.TrimSpace(string(out)))
			}
			env = append(env, "GOCACHE=/tmp/go-build", "GOPROXY=off", "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly")
			goDir = filepath.Dir(gobin)
		}
	}
	// Each package gets the VM's time less a margin, so that a stuck test
	// panics with its goroutines before the VM is killed.
	perTest := o.timeout - min(2*time.Minute, o.timeout/10)
	var tests []guest.Test
	for _, b := range bins {
		args := []string{"-test.v", "-test.count=1", "-test.timeout=" + perTest.String()}
		pattern := b.run
		if o.run != "" {
			pattern = o.run
		}
		if pattern != "" {
			args = append(args, "-test.run="+pattern)
		}
		args = append(args, b.args...)
		tests = append(tests, guest.Test{Name: b.name, Path: b.path, Dir: b.dir, Args: args})
	}
	res.bins = make([]*binResult, len(bins))
	for i, b := range bins {
		res.bins[i] = &binResult{name: b.name, pattern: b.run}
	}
	res.run = o.run

	console := stdout
	if o.quiet {
		console = io.Discard
	}
	logFile, err := os.Create(filepath.Join(runDir, "console.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	if k.Host() {
		return res, runOnHost(res, tests, env, console, logFile)
	}

	if err := need("xz", "zstd", "dpkg-deb", "apt-get"); err != nil {
		return nil, err
	}
	kdir, err := fetchKernel(o.cache, m, k, logf)
	if err != nil {
		return nil, err
	}
	vmlinuz, modDir, err := kernelImage(kdir)
	if err != nil {
		return nil, err
	}
	want := m.Modules
	mods, err := resolveModules(modDir, want)
	if err != nil {
		return nil, err
	}
	initBin, err := os.ReadFile(initPath)
	if err != nil {
		return nil, err
	}
	path := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + goDir
	if k.Arch != "amd64" {
		path = "PATH=/bin"
	}
	cfg := guest.Config{Env: append([]string{path, "HOME=/root", "TMPDIR=/tmp"}, env...)}
	for i, mod := range mods {
		cfg.Modules = append(cfg.Modules, "/"+moduleInitramfsPath(i, mod))
	}
	rd := initramfs{init: initBin, modules: mods, files: map[string]string{}}
	if k.Arch == "amd64" {
		// The host's / is the guest's: binaries, tools and the repository
		// are where they are on the host.
		cfg.Root9P = root9pTag
		cfg.Tests = tests
		// The guest covers /tmp, /root, ... with tmpfs; what the tests
		// need from there (a clone under /tmp, the cache, the module cache
		// under /root) stays visible.
		cfg.Keep = keepPaths(append([]string{o.repo, runDir, binDir}, gomodcache(env)...))
	} else {
		// A foreign architecture cannot use the host's tools: the test
		// binaries travel in the initramfs, with their package's testdata
		// (golden files, fuzz corpora) in its directory.
		for _, t := range tests {
			p := "tests/" + filepath.Base(t.Path)
			rd.files[p] = t.Path
			rd.dirs = append(rd.dirs, strings.TrimPrefix(t.Dir, "/"))
			if err := addTree(rd.files, filepath.Join(t.Dir, "testdata")); err != nil {
				return nil, err
			}
			t.Path = "/" + p
			cfg.Tests = append(cfg.Tests, t)
		}
	}
	if rd.config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	initrd := filepath.Join(runDir, "initramfs.cpio")
	if err := rd.write(initrd); err != nil {
		return nil, err
	}

	accel, why := accelFor(k.Arch, o.accel)
	res.accel, res.accelWhy = accel, why
	qemu := map[string]string{"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}[k.Arch]
	if err := need(qemu); err != nil {
		return nil, err
	}
	logf("booting %s (%s %s) with %s (%s); timeout %s; console in %s", k.ID(), k.Package, k.Version, accel, why, o.timeout, logFile.Name())
	v := vm{arch: k.Arch, accel: accel, cpus: o.cpus, memMiB: o.memMiB, kernel: vmlinuz, initrd: initrd}
	if cfg.Root9P != "" {
		v.root9p = root9pTag
	}
	// KVM that opens and even runs a few instructions may still not boot a
	// kernel (no hardware virtualization underneath, unsupported MSRs):
	// what it cannot boot within seconds, TCG boots instead.
	var bootDeadline time.Duration
	if accel == "kvm" && o.accel == "auto" {
		bootDeadline = 20 * time.Second
	}
	events, lines, hung, err := runVM(v, o.timeout, bootDeadline, console, logFile)
	if errors.Is(err, errNoBoot) {
		res.accel, res.accelWhy = "tcg", "KVM did not boot the kernel: "+firstLine(err.Error())
		logf("%s: falling back to TCG", res.accelWhy)
		v.accel = "tcg"
		events, lines, hung, err = runVM(v, o.timeout, 0, console, logFile)
	}
	if err != nil {
		res.vmErr = err.Error()
	}
	res.hung = hung
	res.collect(events, lines)
	if hung {
		res.vmErr = fmt.Sprintf("VM hung after %s: killed", o.timeout)
	}
	return res, nil
}

// runOnHost runs the binaries on the machine's own kernel ("host" entry).
func runOnHost(res *result, tests []guest.Test, env []string, console, log io.Writer) error {
	res.accel, res.accelWhy = "none", "the host's kernel"
	w := io.MultiWriter(console, log)
	var lines []string
	var events []event
	start := time.Now()
	for _, t := range tests {
		events = append(events, event{at: time.Since(start), kind: "start", args: []string{t.Name}, line: len(lines)})
		cmd := exec.Command(t.Path, t.Args...)
		cmd.Dir = t.Dir
		cmd.Env = os.Environ()
		for _, e := range env {
			if strings.HasPrefix(e, "CI=") || strings.HasPrefix(e, "SLUICE_") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		out, err := cmd.CombinedOutput()
		w.Write(out)
		lines = append(lines, strings.Split(string(out), "\n")...)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			return err
		}
		events = append(events, event{at: time.Since(start), kind: "exit", args: []string{t.Name, strconv.Itoa(code), "0"}, line: len(lines)})
	}
	events = append(events, event{kind: "done", at: time.Since(start)})
	res.collect(events, lines)
	return nil
}

// result is one kernel's run.
type result struct {
	kernel          Kernel
	suite, runDir   string
	accel, accelWhy string
	buildTime       time.Duration
	bootInit        time.Duration // qemu start → init running
	firstTest       time.Duration // qemu start → first test binary started
	guestUptime     string        // the guest's uptime when the tests started
	total           time.Duration
	features        string
	bins            []*binResult
	done, hung      bool
	vmErr           string
	// run is the --run pattern given for every package, if any.
	run string
}

type binResult struct {
	name string
	// pattern is the suite's -run pattern for this package, if any.
	pattern string
	// noTests: the binary said its -run pattern matched no test.
	output              []string
	ran                 bool
	exit                int
	time                time.Duration
	pass, skip, fail    int
	skips, fails, hints []string
	noTests             bool
}

var (
	resultLine = regexp.MustCompile(`^(\s*)--- (PASS|FAIL|SKIP): (\S+)`)
	// noTestsLine is what a test binary prints (to stderr, then exits 0)
	// when its -test.run pattern matches no test.
	noTestsLine = "testing: warning: no tests to run"
	logLine     = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)`)
	features    = regexp.MustCompile(`sluice-kernel-features: (.*)`)
)

func (r *result) collect(events []event, lines []string) {
	byName := map[string]*binResult{}
	for _, b := range r.bins {
		byName[b.name] = b
	}
	var startAt time.Duration
	var startLine int
	for _, e := range events {
		switch e.kind {
		case "boot":
			r.bootInit = e.at
		case "ready":
			if len(e.args) > 0 {
				r.guestUptime = e.args[0] + "s"
			}
		case "start":
			if r.firstTest == 0 {
				r.firstTest = e.at
			}
			startAt, startLine = e.at, e.line
		case "exit":
			if len(e.args) < 2 {
				continue
			}
			b := byName[e.args[0]]
			if b == nil {
				continue
			}
			b.ran = true
			b.exit, _ = strconv.Atoi(e.args[1])
			b.time = e.at - startAt
			b.output = lines[startLine:e.line]
			b.parse(b.output)
		case "done":
			r.done = true
			r.total = e.at
		case "error":
			r.vmErr = "guest: " + strings.Join(e.args, " ")
		}
	}
	for _, l := range lines {
		if m := features.FindStringSubmatch(l); m != nil {
			r.features = m[1]
		}
	}
}

func (b *binResult) parse(lines []string) {
	// go test -v prints a test's log (the t.Skip message last) after its
	// "=== RUN" line, but a subtest's result line only with its parent's.
	runAt := map[string]int{}
	for i, l := range lines {
		if name, ok := strings.CutPrefix(l, "=== RUN   "); ok {
			runAt[name] = i
		}
	}
	for _, l := range lines {
		// Contains: stderr may share the console line with stdout.
		if strings.Contains(l, noTestsLine) {
			b.noTests = true
		}
		m := resultLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		switch m[2] {
		case "PASS":
			b.pass++
		case "FAIL":
			b.fail++
			b.fails = append(b.fails, m[3])
		case "SKIP":
			b.skip++
			reason := ""
			if at, ok := runAt[m[3]]; ok {
				for _, l := range lines[at+1:] {
					if strings.HasPrefix(l, "=== ") || resultLine.MatchString(l) {
						break
					}
					if lm := logLine.FindStringSubmatch(l); lm != nil {
						reason = lm[1]
					}
				}
			}
			b.skips = append(b.skips, m[3]+": "+reason)
		}
	}
}

func (r *result) ok() bool {
	if r.hung || r.vmErr != "" || !r.done || len(r.unmatched()) > 0 {
		return false
	}
	for _, b := range r.bins {
		if !b.ran || b.exit != 0 || b.fail > 0 {
			return false
		}
	}
	return true
}

// unmatched names the -run patterns that matched no test, which go test
// reports with a warning and exit status 0. A suite's pattern for a package
// must match there: otherwise a renamed test silently drops out of the
// suite. --run applies to every package of the suite, so it must match in
// one of them.
func (r *result) unmatched() []string {
	if r.run != "" {
		var names []string
		for _, b := range r.bins {
			if !b.ran || !b.noTests {
				return nil
			}
			names = append(names, b.name)
		}
		return []string{fmt.Sprintf("--run '%s' matched no test in any package (%s)", r.run, strings.Join(names, ", "))}
	}
	var out []string
	for _, b := range r.bins {
		if b.failsPattern(r.run) {
			out = append(out, fmt.Sprintf("%s: the suite's -run pattern '%s' matched no test", b.name, b.pattern))
		}
	}
	return out
}

// failsPattern: b ran with a pattern of its suite's that matched no test.
func (b *binResult) failsPattern(run string) bool {
	return run == "" && b.ran && b.noTests && b.pattern != ""
}

func (r *result) exitCode() int {
	switch {
	case r.ok():
		return 0
	case r.hung:
		return 3
	default:
		return 1
	}
}

func (r *result) print(w io.Writer) {
	k := r.kernel
	fmt.Fprintf(w, "\n== vmtest %s: %s, suite %s\n", k.ID(), describe(k), r.suite)
	note := ""
	if r.accel == "tcg" {
		note = " — software emulation: timings are not performance figures"
	}
	fmt.Fprintf(w, "   accel:    %s (%s)%s\n", r.accel, r.accelWhy, note)
	fmt.Fprintf(w, "   build:    %.1fs (host)\n", r.buildTime.Seconds())
	if !k.Host() {
		fmt.Fprintf(w, "   boot:     init after %.1fs, first test after %.1fs (guest uptime %s)\n", r.bootInit.Seconds(), r.firstTest.Seconds(), r.guestUptime)
	}
	var pass, skip, fail int
	for _, b := range r.bins {
		status := "PASS"
		switch {
		case !b.ran:
			status = "NOT RUN"
		case b.exit != 0 || b.fail > 0:
			status = fmt.Sprintf("FAIL (exit %d)", b.exit)
		case b.failsPattern(r.run):
			status = "NO TESTS"
		}
		fmt.Fprintf(w, "   %-26s %-14s %3d passed, %3d skipped, %3d failed  %7.1fs\n", b.name, status, b.pass, b.skip, b.fail, b.time.Seconds())
		pass, skip, fail = pass+b.pass, skip+b.skip, fail+b.fail
	}
	fmt.Fprintf(w, "   %-26s %-14s %3d passed, %3d skipped, %3d failed  %7.1fs (tests)\n", "total", "", pass, skip, fail, (r.total - r.firstTest).Seconds())
	if r.features != "" {
		fmt.Fprintf(w, "   features: %s\n", r.features)
		for _, f := range datapath.KernelFeatures {
			if strings.Contains(r.features, f.Name+"=no") {
				fmt.Fprintf(w, "   fallback: no %s (Linux %s+): %s\n", f.Name, f.MinKernel, f.Without)
			}
		}
	}
	for _, b := range r.bins {
		for _, s := range b.skips {
			fmt.Fprintf(w, "   skipped:  %s %s\n", b.name, s)
		}
		for _, f := range b.fails {
			fmt.Fprintf(w, "   FAILED:   %s %s\n", b.name, f)
		}
	}
	for _, u := range r.unmatched() {
		fmt.Fprintf(w, "   ERROR:    %s\n", u)
	}
	if r.vmErr != "" {
		fmt.Fprintf(w, "   ERROR:    %s\n", r.vmErr)
	} else if !r.done && !k.Host() {
		fmt.Fprintf(w, "   ERROR:    the VM stopped before the tests finished (kernel panic? see %s)\n", filepath.Join(r.runDir, "console.log"))
	}
	verdict := "PASS"
	if !r.ok() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "   result:   %s %s (console: %s)\n", verdict, k.ID(), filepath.Join(r.runDir, "console.log"))
}

func describe(k Kernel) string {
	if k.Host() {
		return k.Description
	}
	return fmt.Sprintf("%s %s (%s)", k.Package, k.Version, k.Description)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// printFailedOutput prints the whole output of each package that failed.
func (r *result) printFailedOutput(w io.Writer) {
	for _, b := range r.bins {
		if b.ran && (b.exit != 0 || b.fail > 0) {
			fmt.Fprintf(w, "\n--- output of %s on %s\n%s\n", b.name, r.kernel.ID(), strings.Join(b.output, "\n"))
		}
	}
}

// oneLine summarises the run for the matrix's closing table.
func (r *result) oneLine() string {
	var pass, skip, fail int
	for _, b := range r.bins {
		pass, skip, fail = pass+b.pass, skip+b.skip, fail+b.fail
	}
	verdict := "PASS"
	if !r.ok() {
		verdict = "FAIL"
	}
	return fmt.Sprintf("%-4s %-11s %-8s %s: boot %.1fs, tests %.0fs, %d passed, %d skipped, %d failed",
		verdict, r.kernel.ID(), r.suite, r.accel, r.firstTest.Seconds(), (r.total - r.firstTest).Seconds(), pass, skip, fail)
}
