package main

// -profile DIR: Go CPU profiles of the agent (over each step's window,
// from the agent's --pprof handlers on its local API socket) and of the
// follower (sluice observe --cpu-profile), and the agent's heap at the
// end, to see where the time goes. Profiling costs a little CPU itself:
// take figures from a run without it.

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
)

// profileName is the file a step's profile goes to: agent-store-test-run-50000.pprof.
func profileName(dir, who string, s *stepResult) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%s-%s-%.0f.pprof", who, s.Variant, s.Source, s.Target))
}

// fetchAgentProfile GETs a /debug/pprof path from the agent's API socket
// into file.
func fetchAgentProfile(ctx context.Context, stateDir, path, file string) error {
	sock := filepath.Join(stateDir, api.SocketName)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("agent profile %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("agent profile %s: %s: %s (is the agent running with --pprof?)", path, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("agent profile %s: %w", path, err)
	}
	return f.Close()
}

// profileAgent starts a CPU profile of the agent over the next d; wait
// returns its error once it is written.
func profileAgent(ctx context.Context, stateDir, file string, d time.Duration) (wait func() error) {
	secs := int(math.Ceil(d.Seconds()))
	done := make(chan error, 1)
	go func() {
		done <- fetchAgentProfile(ctx, stateDir, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), file)
	}()
	return func() error { return <-done }
}
