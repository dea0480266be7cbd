package harness

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// BPFMem is the kernel memory charged for the BPF maps and programs a
// process holds open (the "memlock" of each in /proc/<pid>/fdinfo, which
// is what bpftool prints and what the memory cgroup is charged on 5.11+).
// It is not part of the process's RSS.
type BPFMem struct {
	// Maps are the maps held, largest first; MapBytes their sum.
	Maps     []BPFMapMem `json:"maps"`
	MapBytes uint64      `json:"mapBytes"`
	// Progs is how many programs are held and ProgBytes their memlock
	// (instructions and JIT image).
	Progs     int    `json:"progs"`
	ProgBytes uint64 `json:"progBytes"`
}

// BPFMapMem is one map's kernel memory.
type BPFMapMem struct {
	ID         uint32 `json:"id"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	MaxEntries uint32 `json:"maxEntries"`
	Memlock    uint64 `json:"memlock"`
}

// ReadBPFMem sums the memlock of every BPF map and program pid holds a
// file descriptor to, each counted once however many descriptors it has.
func ReadBPFMem(pid int) (BPFMem, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	des, err := os.ReadDir(dir)
	if err != nil {
		return BPFMem{}, fmt.Errorf("read bpf objects of pid %d: %w", pid, err)
	}
	var m BPFMem
	maps := map[uint32]bool{}
	progs := map[uint32]bool{}
	for _, de := range des {
		f, err := os.Open(filepath.Join(dir, de.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		info := parseFdinfo(f)
		f.Close()
		switch {
		case info["map_id"] != "":
			id, _ := strconv.ParseUint(info["map_id"], 10, 32)
			if maps[uint32(id)] {
				continue
			}
			maps[uint32(id)] = true
			mm := BPFMapMem{ID: uint32(id), Type: info["map_type"]}
			mm.Memlock, _ = strconv.ParseUint(info["memlock"], 10, 64)
			if n, err := strconv.ParseUint(info["max_entries"], 10, 32); err == nil {
				mm.MaxEntries = uint32(n)
			}
			if em, err := ebpf.NewMapFromID(ebpf.MapID(id)); err == nil {
				if mi, err := em.Info(); err == nil {
					mm.Name, mm.Type = mi.Name, mi.Type.String()
				}
				em.Close()
			}
			m.Maps = append(m.Maps, mm)
			m.MapBytes += mm.Memlock
		case info["prog_id"] != "":
			id, _ := strconv.ParseUint(info["prog_id"], 10, 32)
			if progs[uint32(id)] {
				continue
			}
			progs[uint32(id)] = true
			n, _ := strconv.ParseUint(info["memlock"], 10, 64)
			m.Progs++
			m.ProgBytes += n
		}
	}
	slices.SortFunc(m.Maps, func(a, b BPFMapMem) int {
		if c := cmp.Compare(b.Memlock, a.Memlock); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return m, nil
}

// parseFdinfo reads the "key:\tvalue" lines of an fdinfo file.
func parseFdinfo(r io.Reader) map[string]string {
	out := map[string]string{}
	s := bufio.NewScanner(r)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// NetnsGet fetches url from inside the network namespace at nsPath (an
// agent's loopback-only HTTP servers) and returns the body; a status other
// than 200 is an error.
func NetnsGet(ctx context.Context, nsPath, url string) ([]byte, error) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := InNetns(nsPath, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s in %s: %w", url, nsPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s in %s: %w", url, nsPath, err)
	}
	if resp.StatusCode != http.StatusOK {
		line, _, _ := strings.Cut(string(body), "\n")
		return nil, errors.New("get " + url + ": " + resp.Status + ": " + line)
	}
	return body, nil
}
