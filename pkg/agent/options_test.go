package agent

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
)

func TestOptionsValidateNamesEverySetting(t *testing.T) {
	o := Defaults()
	require.NoError(t, o.Validate())

	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	o.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--node-name=", "--source=etcd", "--attach-mode=xdp", "--log-level=loud",
		"--bpf-root=relative/dir", "--ct-gc-interval=10ms", "--ct-max=5", "--events-buffer=1000",
		"--socket-group=no-such-group-sluice", "--manifest-max-bytes=0",
	}))
	err := o.Validate()
	require.Error(t, err)
	for _, want := range []string{"--node-name", `--source="etcd"`, `--attach-mode="xdp"`, `--log-level="loud"`,
		`--bpf-root "relative/dir"`, "--ct-gc-interval 10ms", "ct-max 5", "events-buffer 1000",
		`--socket-group: no group "no-such-group-sluice"`, "--manifest-max-bytes 0 must be positive"} {
		require.ErrorContains(t, err, want)
	}
}

func TestFilesSourceNeedsManifestDir(t *testing.T) {
	o := Defaults()
	o.ManifestDir = ""
	require.ErrorContains(t, o.Validate(), "--manifests is required")
}

func TestChooseAttachMode(t *testing.T) {
	withTCX := datapath.Features{Release: "6.18", TCX: true}
	without := datapath.Features{Release: "6.1"}
	for _, c := range []struct {
		want string
		f    datapath.Features
		mode datapath.AttachMode
		err  string
	}{
		{"auto", withTCX, datapath.AttachTCX, ""},
		{"auto", without, datapath.AttachTC, ""},
		{"tc", withTCX, datapath.AttachTC, ""},
		{"tcx", withTCX, datapath.AttachTCX, ""},
		{"tcx", without, "", "kernel 6.1 lacks"},
	} {
		mode, err := chooseAttachMode(c.want, c.f)
		if c.err != "" {
			require.ErrorContains(t, err, c.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.mode, mode, "%s on %s", c.want, c.f.Release)
	}
}
