package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// FindV2Mount returns the mount point of the first cgroup2 filesystem in
// /proc/self/mountinfo.
func FindV2Mount() (string, error) {
	mp, err := FindMount("cgroup2")
	if err != nil {
		return "", err
	}
	if mp == "" {
		return "", fmt.Errorf("no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup-root")
	}
	return mp, nil
}

// FindMount returns the mount point of the first filesystem of type fstype
// in /proc/self/mountinfo, or "" if there is none.
func FindMount(fstype string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	return findMount(f, fstype)
}

func findMount(r io.Reader, want string) (string, error) {
	ms, err := parseMounts(r)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.FSType == want {
			return m.Point, nil
		}
	}
	return "", nil
}

// Mount is one line of mountinfo: where, and which filesystem type.
type Mount struct {
	Point, FSType string
}

// Mounts lists the mounts of /proc/self/mountinfo in order.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	return parseMounts(f)
}

func parseMounts(r io.Reader) ([]Mount, error) {
	var ms []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 0:30 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields := strings.Fields(pre)
		fstype := strings.Fields(post)
		if len(fields) >= 5 && len(fstype) > 0 {
			ms = append(ms, Mount{Point: unescape(fields[4]), FSType: fstype[0]})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return ms, nil
}

// unescape undoes mountinfo's octal escapes (\040 for space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Netns returns one /proc/<pid>/ns/net path per distinct network namespace
// of the processes in the cgroup tree under root: the pods' namespaces
// (and the node's), found without asking a container runtime.
func Netns(root string) []string {
	seen := map[uint64]bool{}
	var out []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, pid := range strings.Fields(string(procs)) {
			path := "/proc/" + pid + "/ns/net"
			var st syscall.Stat_t
			if syscall.Stat(path, &st) != nil || seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
			out = append(out, path)
		}
		return nil
	})
	return out
}
