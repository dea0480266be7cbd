package harness

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// GlobalPrefix starts the name of every kernel object and directory the
// harness creates. A run's prefix is GlobalPrefix, four hex digits and a dash
// (for example "sl3f9a-"), which is what CleanupStale matches.
const GlobalPrefix = "sl"

// registryDir holds one file per live run naming its owner process. It is on
// tmpfs (/run), like /var/run/netns, so both vanish together on reboot.
const registryDir = "/run/sluice-harness"

// tempMarker is written into a run's temporary directory so CleanupStale
// removes only directories the harness made.
const tempMarker = ".sluice-harness"

var runIDPattern = regexp.MustCompile(`^` + GlobalPrefix + `[0-9a-f]{4}$`)

// runOwner is the content of a registry file.
type runOwner struct {
	Pid int `json:"pid"`
	// Start is the owner's start time in clock ticks since boot, so a reused
	// pid is not mistaken for the owner.
	Start   uint64    `json:"start"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// claimRunID picks an unused run id and records this process as its owner.
// The registry file is created with O_EXCL, so two concurrent runs never get
// the same id.
func claimRunID(name string) (string, error) {
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", registryDir, err)
	}
	start, err := processStartTime(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("read own start time: %w", err)
	}
	owner, err := json.Marshal(runOwner{Pid: os.Getpid(), Start: start, Name: name, Created: time.Now()})
	if err != nil {
		return "", err
	}
	for range 64 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("random run id: %w", err)
		}
		id := GlobalPrefix + hex.EncodeToString(b[:])
		if leftovers, _ := runResources(id); len(leftovers) > 0 {
			continue // an aborted run's objects still exist; don't mix with them
		}
		f, err := os.OpenFile(filepath.Join(registryDir, id+".json"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("claim run id %s: %w", id, err)
		}
		_, werr := f.Write(owner)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("write run registry for %s: %w", id, werr)
		}
		return id, nil
	}
	return "", errors.New("no free run id after 64 attempts; run CleanupStale")
}

// releaseRunID removes the registry entry of a run whose objects are gone.
func releaseRunID(id string) error {
	err := os.Remove(filepath.Join(registryDir, id+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release run id %s: %w", id, err)
	}
	return nil
}

// runAlive reports whether the process that owns run id still runs.
func runAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(registryDir, id+".json"))
	if err != nil {
		return false
	}
	var o runOwner
	if err := json.Unmarshal(b, &o); err != nil || o.Pid <= 0 {
		return false
	}
	st, err := processStartTime(o.Pid)
	return err == nil && st == o.Start
}

// runResources lists what exists of run id: named netns, the cgroup and bpffs
// directories and temporary directories.
func runResources(id string) ([]string, error) {
	var found []string
	nss, err := listNetns()
	if err != nil {
		return nil, err
	}
	for _, n := range nss {
		if strings.HasPrefix(n, id+"-") {
			found = append(found, filepath.Join(netnsDir, n))
		}
	}
	if cg, err := Cgroup2Mount(); err == nil {
		if _, err := os.Stat(filepath.Join(cg, id)); err == nil {
			found = append(found, filepath.Join(cg, id))
		}
	}
	if v1, err := CgroupV1Mounts(); err == nil {
		for _, h := range v1 {
			if _, err := os.Stat(filepath.Join(h, id)); err == nil {
				found = append(found, filepath.Join(h, id))
			}
		}
	}
	if _, err := os.Stat(filepath.Join(bpffsDefault, id)); err == nil {
		found = append(found, filepath.Join(bpffsDefault, id))
	}
	tmps, _ := filepath.Glob(filepath.Join(os.TempDir(), id+"-*"))
	for _, d := range tmps {
		if _, err := os.Stat(filepath.Join(d, tempMarker)); err == nil {
			found = append(found, d)
		}
	}
	return found, nil
}

// staleRunIDs returns ids of runs whose objects exist but whose owner is gone.
func staleRunIDs() ([]string, error) {
	ids := map[string]bool{}
	consider := func(name string) {
		id, _, _ := strings.Cut(name, "-")
		if runIDPattern.MatchString(id) {
			ids[id] = true
		}
	}
	nss, err := listNetns()
	if err != nil {
		return nil, err
	}
	for _, n := range nss {
		consider(n)
	}
	if cg, err := Cgroup2Mount(); err == nil {
		if entries, err := os.ReadDir(cg); err == nil {
			for _, e := range entries {
				consider(e.Name() + "-")
			}
		}
	}
	if v1, err := CgroupV1Mounts(); err == nil {
		for _, h := range v1 {
			if entries, err := os.ReadDir(h); err == nil {
				for _, e := range entries {
					consider(e.Name() + "-")
				}
			}
		}
	}
	if entries, err := os.ReadDir(bpffsDefault); err == nil {
		for _, e := range entries {
			consider(e.Name() + "-")
		}
	}
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range entries {
			consider(e.Name())
		}
	}
	if entries, err := os.ReadDir(registryDir); err == nil {
		for _, e := range entries {
			consider(strings.TrimSuffix(e.Name(), ".json") + "-")
		}
	}
	var stale []string
	for id := range ids {
		if !runAlive(id) {
			stale = append(stale, id)
		}
	}
	return stale, nil
}

// CleanupStale removes what earlier, aborted runs left behind: processes in
// their namespaces and cgroups, named netns, cgroups, bpffs directories and
// temporary directories. Only objects named with a run prefix
// (GlobalPrefix + 4 hex digits + "-") whose owning process is gone are touched,
// so it is safe to call while other harness runs are live.
// It returns the paths it removed.
func CleanupStale() ([]string, error) {
	ids, err := staleRunIDs()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, id := range ids {
		res, err := runResources(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removeRun(id, nil); err != nil {
			errs = append(errs, err)
		}
		removed = append(removed, res...)
	}
	return removed, errors.Join(errs...)
}

// CleanupOwnRuns removes every run this process owns, whatever state it
// is in (a cluster half built included): for a signal handler that must
// leave nothing behind when the tests are interrupted.
func CleanupOwnRuns() error {
	entries, err := os.ReadDir(registryDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(registryDir, e.Name()))
		if err != nil {
			continue
		}
		var o runOwner
		if json.Unmarshal(b, &o) != nil || o.Pid != os.Getpid() {
			continue
		}
		errs = append(errs, removeRun(strings.TrimSuffix(e.Name(), ".json"), nil))
	}
	return errors.Join(errs...)
}

// removeMu serialises removeRun: a signal handler's CleanupOwnRuns and a
// test's own Cleanup may remove the same run at once, and the handler's
// exit must not cut the other's removal short.
var removeMu sync.Mutex

// removeRun deletes every object of run id. netnsOrder, when given, is the
// order in which this run's namespaces are deleted (pods before nodes before
// the underlay); namespaces not listed follow.
func removeRun(id string, netnsOrder []string) error {
	removeMu.Lock()
	defer removeMu.Unlock()
	var errs []error
	nss, err := listNetns()
	if err != nil {
		errs = append(errs, err)
	}
	var mine []string
	seen := map[string]bool{}
	for _, n := range netnsOrder {
		mine = append(mine, n)
		seen[n] = true
	}
	for _, n := range nss {
		if strings.HasPrefix(n, id+"-") && !seen[n] {
			mine = append(mine, n)
		}
	}
	// Processes first: anything still running in a namespace or cgroup of
	// the run (agents, workloads, helpers they forked) keeps objects alive.
	for _, n := range mine {
		if err := killNetnsProcs(filepath.Join(netnsDir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	cg, cgErr := Cgroup2Mount()
	if cgErr == nil {
		if err := killCgroup(filepath.Join(cg, id), 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := killCgroupsV1(id, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	tmps, _ := filepath.Glob(filepath.Join(os.TempDir(), id+"-*"))
	for _, d := range tmps {
		if _, err := os.Stat(filepath.Join(d, tempMarker)); err != nil {
			continue
		}
		// Mounts first (a node's containers and volumes), so that
		// removing the directory never reaches into them.
		if err := unmountUnder(d); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range mine {
		if err := deleteNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(bpffsDefault, id)); err != nil {
		errs = append(errs, fmt.Errorf("remove bpffs dir of run %s: %w", id, err))
	}
	for _, d := range tmps {
		if _, err := os.Stat(filepath.Join(d, tempMarker)); err != nil {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove temp dir %s: %w", d, err))
		}
	}
	if len(errs) == 0 {
		if err := releaseRunID(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNetnsProcs SIGKILLs every process whose network namespace is the one
// bind-mounted at path and waits (bounded) for them to disappear.
func killNetnsProcs(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat netns %s: %w", path, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	find := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == want {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still run in netns %s", pids, path)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Our own children stay as zombies (and keep /proc entries, but not
		// the namespace) until reaped; zombies have no ns links, so they
		// drop out of find().
		time.Sleep(20 * time.Millisecond)
	}
}
