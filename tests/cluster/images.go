package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BusyboxPath is Debian's static busybox (busybox-static).
const BusyboxPath = "/bin/busybox"

// BuildImages builds the images the cluster's pods run, from the checkout
// at repo, into one docker-archive tarball in dir, and returns its path:
//
//   - AgentImage: sluice-agent, sluice and sluice-cni built as
//     daemonset/Dockerfile builds them (static, -trimpath, the version
//     stamped), at the same paths, with the same entrypoint; on an empty
//     base instead of distroless/static (its CA certificates, passwd and
//     tzdata are not used: the agent talks to the API server with the
//     service account's CA and runs as UID 0).
//   - BusyboxImage: the mount-bpffs init container's busybox, from
//     Debian's busybox-static (sh, awk and mount are what it runs).
//   - PauseImage and WorkloadImage: tests/cluster/workload.
func BuildImages(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	version := "cluster-test"
	if out, err := exec.CommandContext(ctx, "git", "-C", repo, "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/sluice-net/sluice/pkg/agent.version="+version,
		"-o", bin+"/", "./cmd/sluice-agent", "./cmd/sluice", "./cmd/sluice-cni", "./tests/cluster/workload")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the images' binaries: %w:\n%s", err, out)
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		return "", fmt.Errorf("no static busybox for the mount-bpffs init container: install busybox-static: %w", err)
	}
	busybox := []ImageFile{{Path: "/bin/busybox", Source: BusyboxPath}}
	for _, applet := range []string{"sh", "awk", "mount", "echo", "cat", "ls"} {
		busybox = append(busybox, ImageFile{Path: "/bin/" + applet, Link: "busybox"})
	}
	workload := []ImageFile{{Path: "/workload", Source: filepath.Join(bin, "workload")}}
	images := []Image{
		{Ref: AgentImage, Entrypoint: []string{"/usr/local/bin/sluice-agent"}, Files: []ImageFile{
			{Path: "/usr/local/bin/sluice-agent", Source: filepath.Join(bin, "sluice-agent")},
			{Path: "/usr/local/bin/sluice", Source: filepath.Join(bin, "sluice")},
			{Path: "/usr/local/bin/sluice-cni", Source: filepath.Join(bin, "sluice-cni")},
		}},
		{Ref: BusyboxImage, Entrypoint: []string{"/bin/sh"}, Files: busybox},
		{Ref: PauseImage, Entrypoint: []string{"/workload", "pause"}, Files: workload},
		{Ref: WorkloadImage, Entrypoint: []string{"/workload"}, Files: workload},
	}
	path := filepath.Join(dir, "images.tar")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := WriteDockerArchive(f, images...); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, f.Close()
}
