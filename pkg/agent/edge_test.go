//go:build sluice_edge

package agent

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/rungroup"
	"github.com/sluice-net/sluice/pkg/source/files"
)

// The edge build serves the files source without the xDS server, and
// refuses what it left out by name instead of failing later.
func TestEdgeBuild(t *testing.T) {
	o := Defaults()
	assert.False(t, o.XDS, "no xDS server by default")
	o.ManifestDir = t.TempDir()
	require.NoError(t, o.Validate())
	src, err := newSource(o, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.IsType(t, &files.Source{}, src)

	o.Source, o.Kubeconfig = "kubernetes", "/etc/sluice/kubeconfig"
	require.ErrorContains(t, o.Validate(), "--source=kubernetes: this sluice-agent is the edge build (-tags sluice_edge")

	a := &Agent{opts: Defaults(), log: slog.New(slog.DiscardHandler)}
	require.NoError(t, a.startXDS(&rungroup.Group{}))
	assert.Nil(t, a.proxyStatus())
	a.opts.XDS = true
	require.ErrorContains(t, a.startXDS(&rungroup.Group{}), "--xds\nthis sluice-agent is the edge build")
}
