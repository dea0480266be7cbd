// Command sluice-cni is the Sluice chained CNI plugin (pkg/cni), and its
// installer: the container runtime executes it with the CNI protocol;
// `sluice-cni install` and `sluice-cni uninstall` add it to and remove it
// from the node's network configuration (the DaemonSet's init container,
// and the manual cleanup). It only wires.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sluice-net/sluice/pkg/cni"
)

func main() {
	if len(os.Args) > 1 && os.Getenv("CNI_COMMAND") == "" {
		if err := runTool(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "sluice-cni:", err)
			os.Exit(1)
		}
		return
	}
	cni.Main()
}

func runTool(cmd string, args []string) error {
	o := cni.InstallOptions{}
	fs := flag.NewFlagSet("sluice-cni "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.ConfDir, "conf-dir", "/etc/cni/net.d", "the node's CNI network configuration directory")
	fs.StringVar(&o.BinDir, "bin-dir", "/opt/cni/bin", "the node's CNI plugin directory (empty: leave binaries alone)")
	fs.StringVar(&o.StateDir, "state-dir", "", "install: the agent's --state-dir, written into the entry as \"stateDir\" (default "+cni.DefaultStateDir+")")
	fs.StringVar(&o.Timeout, "timeout", "", "install: how long ADD waits for the agent, written into the entry as \"timeout\" (default "+cni.DefaultTimeout.String()+")")
	fs.DurationVar(&o.Wait, "wait", 5*time.Minute, "install: how long to wait for the cluster's CNI to write a network configuration")
	switch cmd {
	case "install", "uninstall":
	default:
		return fmt.Errorf("unknown command %q: use install or uninstall (the container runtime runs the plugin with CNI_COMMAND set)", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cmd == "uninstall" {
		files, err := cni.Uninstall(o)
		for _, f := range files {
			fmt.Println("removed sluice-cni from", f)
		}
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary to install: %w", err)
	}
	o.Binary = self
	file, err := cni.Install(o)
	if err != nil {
		return err
	}
	fmt.Println("sluice-cni is chained in", file)
	return nil
}
