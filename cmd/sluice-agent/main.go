// Command sluice-agent is the Sluice node agent. It only wires: flags into
// agent.Options, a logger, signals into a context, then agent.Run.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-net/sluice/pkg/agent"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	opts := agent.Defaults()
	var configFile string
	cmd := &cobra.Command{
		Use:   "sluice-agent",
		Short: "Sluice node agent: eBPF connectivity, policy and telemetry for this node",
		Long: `sluice-agent loads Sluice's eBPF programs, attaches them to every local pod's
host-side interface and keeps them in step with the source of truth.

SIGTERM stops the agent and leaves the datapath pinned and attached, so
traffic keeps flowing until the next agent adopts it.`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := agent.ApplyConfigFile(cmd.Flags(), configFile); err != nil {
					return err
				}
			}
			var level slog.Level
			_ = level.UnmarshalText([]byte(opts.LogLevel))
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			// Every effective setting, from defaults, file and flags.
			var settings []any
			cmd.Flags().VisitAll(func(f *pflag.Flag) { settings = append(settings, f.Name, f.Value.String()) })
			log.Info("effective settings", settings...)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return agent.Run(ctx, opts, log)
		},
	}
	opts.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&configFile, "config", "", "YAML file of settings, one \"flag-name: value\" per line (the DaemonSet's ConfigMap); flags on the command line win")
	return cmd.Execute()
}
