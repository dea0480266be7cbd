package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestApplyConfigFile(t *testing.T) {
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "config.yaml")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	flags := func(args ...string) (*Options, *pflag.FlagSet) {
		o := Defaults()
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		o.AddFlags(fs)
		require.NoError(t, fs.Parse(args))
		return &o, fs
	}

	o, fs := flags("--ct-max=4096")
	require.NoError(t, ApplyConfigFile(fs, write("node-name: n7\nct-max: 999999\nct-gc-interval: 30s\nmetrics-address: 127.0.0.1:9962\npolicy-audit: true\n")))
	require.Equal(t, "n7", o.NodeName)
	require.EqualValues(t, 4096, o.Datapath.CTMax, "the command line wins")
	require.Equal(t, 30*time.Second, o.CTGCInterval)
	require.Equal(t, "127.0.0.1:9962", o.MetricsAddress)
	require.True(t, o.PolicyAudit)

	_, fs = flags()
	err := ApplyConfigFile(fs, write("ct-maks: 10\n"))
	require.ErrorContains(t, err, `"ct-maks" is not a setting of sluice-agent`)

	_, fs = flags()
	err = ApplyConfigFile(fs, write("ct-max: lots\n"))
	require.ErrorContains(t, err, "ct-max")

	_, fs = flags()
	require.ErrorContains(t, ApplyConfigFile(fs, filepath.Join(t.TempDir(), "missing.yaml")), "read config file")
}
