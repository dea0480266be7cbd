package agent

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCNIUninstallOptions(t *testing.T) {
	if !kubeBuiltIn {
		t.Skip("--cni-uninstall-with asks the API server: the edge build has no Kubernetes source")
	}
	o := Defaults()
	o.CNI.UninstallWith = "sluice"
	o.CNI.ConfDir = "etc/cni"
	err := o.Validate()
	for _, want := range []string{`--cni-uninstall-with "sluice" must be NAMESPACE/NAME`, "needs --source=kubernetes", "--cni-conf-dir, an absolute path"} {
		require.ErrorContains(t, err, want)
	}

	o.CNI = CNIOptions{UninstallWith: "sluice-system/sluice", ConfDir: "/host/etc/cni/net.d", BinDir: "/host/opt/cni/bin"}
	o.Source, o.Kubeconfig = "kubernetes", "/etc/kubeconfig"
	require.NoError(t, o.Validate())
}
