package benchkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

// Execer runs a command inside a simulated host: a *harness.Node (its
// netns) or a *harness.Pod (its netns and cgroup).
type Execer interface {
	Exec(ctx context.Context, name string, args ...string) (string, error)
}

// RemoveStale removes, and logs, the leftovers of harness runs whose
// process is gone (a run killed with SIGKILL cannot clean up after
// itself).
func RemoveStale() {
	if removed, err := harness.CleanupStale(); err != nil {
		Logf("cleaning up stale harness runs: %v", err)
	} else if len(removed) > 0 {
		Logf("removed leftovers of aborted runs: %s", strings.Join(removed, ", "))
	}
}

// NewCluster creates a run's simulated cluster, named name, whose steps
// are logged when verbose. Its Cleanup removes everything the run made.
func NewCluster(ctx context.Context, name string, verbose bool) (*harness.Cluster, error) {
	opts := harness.Options{Name: name}
	if verbose {
		opts.Logf = Logf
	}
	return harness.NewCluster(ctx, opts)
}

// Baseline is what a benchmark's node runs with whatever the variant, as a
// real node does, so that variants differ in what they measure alone.
type Baseline struct {
	// MasqueradeTable names the CNI-style egress masquerade, an nftables
	// table for what leaves eth0 from PodCIDR to outside it: its NAT hook
	// keeps conntrack active in the node's netns for every variant.
	MasqueradeTable, PodCIDR string
	// PodCIDR6, when set, is the cluster's IPv6 pod range: the same
	// masquerade then exists for IPv6 too (table ip6 MasqueradeTable), so
	// conntrack is active for IPv6 whatever the variant, as for IPv4.
	PodCIDR6 string
	// LegacyTable, when set, is the iptables-legacy table (nat, filter) a
	// variant uses: it is instantiated up front, because once used in a
	// netns it stays, with its hooks, until the netns goes; without this
	// every variant after the first iptables-legacy run would run with it
	// and those before without. LegacyTable6 is the same for
	// ip6tables-legacy.
	LegacyTable, LegacyTable6 string
}

// Apply puts the baseline in place on node, whose rule file it writes in
// dir, and makes every port from 1024 up ephemeral in client: the
// connections end with RST, so there is no TIME_WAIT, but a wide range
// keeps tuples from coming back while conntrack (the kernel's or
// Sluice's) still holds the previous connection's entry.
func (bl Baseline) Apply(ctx context.Context, node, client Execer, dir string) error {
	if _, err := client.Exec(ctx, "sh", "-c", "echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		return err
	}
	base := filepath.Join(dir, "base.nft")
	masquerade := func(family, cidr string) string {
		return fmt.Sprintf("table %[1]s %[2]s {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname \"eth0\" %[1]s saddr %[3]s %[1]s daddr != %[3]s masquerade\n\t}\n}\n",
			family, bl.MasqueradeTable, cidr)
	}
	rules := masquerade("ip", bl.PodCIDR)
	if bl.PodCIDR6 != "" {
		rules += masquerade("ip6", bl.PodCIDR6)
	}
	if err := os.WriteFile(base, []byte(rules), 0o644); err != nil {
		return err
	}
	if _, err := node.Exec(ctx, "nft", "-f", base); err != nil {
		return err
	}
	for cmd, table := range map[string]string{"iptables-legacy": bl.LegacyTable, "ip6tables-legacy": bl.LegacyTable6} {
		if table == "" {
			continue
		}
		if _, err := node.Exec(ctx, cmd, "-t", table, "-S"); err != nil {
			return err
		}
	}
	return nil
}

// DeleteNftTable deletes table ip name in node's netns if it exists (a
// load that failed leaves none).
func DeleteNftTable(ctx context.Context, node Execer, name string) error {
	return DeleteNftTableOf(ctx, node, "ip", name)
}

// DeleteNftTableOf deletes table name of family (ip, ip6) in node's netns
// if it exists.
func DeleteNftTableOf(ctx context.Context, node Execer, family, name string) error {
	if _, err := node.Exec(ctx, "nft", "list", "table", family, name); err != nil {
		return nil
	}
	_, err := node.Exec(ctx, "nft", "delete", "table", family, name)
	return err
}

// StartEcho starts the serve subcommand of self (the driver's own binary)
// in server on the port of addrs (one address per family the server
// serves, all with the same port; IPv6 if one is IPv6) and waits until
// client gets an echo from each of addrs. The server runs until the
// cluster is cleaned up, which kills every process in the run's
// namespaces and cgroups.
func StartEcho(ctx context.Context, server, client Execer, self string, addrs ...netip.AddrPort) error {
	if len(addrs) == 0 {
		return errors.New("echo server: no address to serve")
	}
	serve := []string{"serve", "-port", fmt.Sprint(addrs[0].Port())}
	for _, a := range addrs {
		if a.Port() != addrs[0].Port() {
			return fmt.Errorf("echo server: %s and %s: one port for every family", addrs[0], a)
		}
		if a.Addr().Is6() && !slices.Contains(serve, "-ipv6") {
			serve = append(serve, "-ipv6")
		}
	}
	if err := startServer(ctx, server, client, self, serve, []string{"probe", "-addr", addrs[0].String()}); err != nil {
		return err
	}
	for _, a := range addrs[1:] {
		if _, err := client.Exec(ctx, self, "probe", "-addr", a.String()); err != nil {
			return fmt.Errorf("echo server at %s: %w", a, err)
		}
	}
	return nil
}

// startServer runs self with serve in server, in the background, and self
// with probe in client until the probe succeeds; a server that exited by
// then is named in the error.
func startServer(ctx context.Context, server, client Execer, self string, serve, probe []string) error {
	srvErr := make(chan error, 1)
	go func() {
		srvCtx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
		defer cancel()
		_, err := server.Exec(srvCtx, self, serve...)
		srvErr <- err
	}()
	if _, err := client.Exec(ctx, self, probe...); err != nil {
		select {
		case e := <-srvErr:
			err = fmt.Errorf("%w (server: %v)", err, e)
		default:
		}
		return err
	}
	return nil
}

// Load is how the load generator runs: Workers connections in parallel
// for Warmup, unmeasured, then Duration, measured.
type Load struct {
	Workers          int
	Duration, Warmup time.Duration
}

// Run runs the loadgen subcommand of self (the driver's own binary) in
// from against addr in mode (conn or rr, see Loadgen) and returns its
// result. A run without a single operation is the caller's to judge.
func (l Load) Run(ctx context.Context, from Execer, self string, addr netip.AddrPort, mode string) (LoadResult, error) {
	var r LoadResult
	err := l.runJSON(ctx, from, &r, self, "loadgen", "-addr", addr.String(), "-mode", mode)
	return r, err
}

// runJSON runs self with args and l's flags in from and decodes the last
// line it prints into out.
func (l Load) runJSON(ctx context.Context, from Execer, out any, self string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, l.Duration+l.Warmup+30*time.Second)
	defer cancel()
	args = append(args, "-workers", fmt.Sprint(l.Workers), "-duration", l.Duration.String(), "-warmup", l.Warmup.String())
	res, err := from.Exec(ctx, self, args...)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(res), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), out); err != nil {
		return fmt.Errorf("%s output %q: %w", args[0], res, err)
	}
	return nil
}
