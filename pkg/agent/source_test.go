//go:build !sluice_edge

package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/source/files"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

func TestKubernetesSourceNeedsKubeconfigOutsideAPod(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	o := Defaults()
	o.Source = "kubernetes"
	require.ErrorContains(t, o.Validate(), "--source=kubernetes outside a pod needs --kubeconfig")

	o.Kubeconfig = "/etc/sluice/kubeconfig"
	require.NoError(t, o.Validate())

	o.Kubeconfig = ""
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	require.NoError(t, o.Validate(), "in a pod the in-cluster configuration is used")
}

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
users:
- name: test
  user: {token: not-a-real-token}
`

func TestNewSourceFollowsTheFlag(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	o := Defaults()
	o.ManifestDir = t.TempDir()
	src, err := newSource(o, log)
	require.NoError(t, err)
	assert.IsType(t, &files.Source{}, src)

	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(kubeconfig), 0o600))
	o.Source, o.Kubeconfig = "kubernetes", path
	src, err = newSource(o, log)
	require.NoError(t, err, "building the client does not contact the API server")
	assert.IsType(t, &k8s.Source{}, src)

	o.Kubeconfig = filepath.Join(t.TempDir(), "missing")
	_, err = newSource(o, log)
	require.ErrorContains(t, err, "--kubeconfig: loading kubeconfig "+o.Kubeconfig)
}
