package identity

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestSubjectLabels(t *testing.T) {
	pod := &model.Pod{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web", "tier": "front"}}
	sub := SubjectOf(pod, map[string]string{"team": "a", "kubernetes.io/metadata.name": "shop"})
	assert.Equal(t, "k8s:app=web,k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop,"+
		"k8s:io.cilium.k8s.namespace.labels.team=a,k8s:io.kubernetes.pod.namespace=shop,k8s:tier=front",
		sub.Labels().String())
}

// A pod cannot claim another namespace, or its namespace's labels, through
// its own labels: it would share an identity with pods it must not pass for.
func TestSubjectDropsSpoofedNamespaceLabels(t *testing.T) {
	honest := SubjectOf(&model.Pod{Namespace: "prod", Labels: map[string]string{"app": "db"}}, map[string]string{"env": "prod"})
	spoof := SubjectOf(&model.Pod{Namespace: "dev", Labels: map[string]string{
		"app":                        "db",
		LabelNamespace:               "prod",
		NamespaceLabelPrefix + "env": "prod",
	}}, nil)
	assert.NotEqual(t, honest.Labels().String(), spoof.Labels().String())
	assert.Equal(t, "k8s:app=db,k8s:io.kubernetes.pod.namespace=dev", spoof.Labels().String())
	assert.Equal(t, map[string]string{"app": "db"}, spoof.PodLabels)
}

func TestLabelsRoundTrip(t *testing.T) {
	ls := NewLabels(
		Label{Source: SourceK8s, Key: "b", Value: "x=y"},
		Label{Source: SourceK8s, Key: "a", Value: ""},
		Label{Source: SourceK8s, Key: "a", Value: ""},
	)
	require.Len(t, ls, 2)
	b, err := json.Marshal(ls)
	require.NoError(t, err)
	assert.JSONEq(t, `["k8s:a=","k8s:b=x=y"]`, string(b))
	var back Labels
	require.NoError(t, json.Unmarshal(b, &back))
	assert.True(t, ls.Equal(back))

	host, _ := ReservedLabels(Host)
	assert.Equal(t, "reserved:host", host.String())
	parsed, err := ParseLabels([]string{"reserved:host"})
	require.NoError(t, err)
	assert.True(t, host.Equal(parsed))

	for _, bad := range []string{"nosource", ":k=v", "k8s:", "k8s:=v"} {
		_, err := ParseLabel(bad)
		assert.Error(t, err, bad)
	}
}

func TestHasIdentity(t *testing.T) {
	assert.True(t, HasIdentity(&model.Pod{Phase: model.PodPending}))
	assert.True(t, HasIdentity(&model.Pod{Phase: model.PodRunning}))
	assert.False(t, HasIdentity(&model.Pod{Phase: model.PodRunning, HostNetwork: true}))
	assert.False(t, HasIdentity(&model.Pod{Phase: model.PodSucceeded}))
	assert.False(t, HasIdentity(&model.Pod{Phase: model.PodFailed}))
	assert.False(t, HasIdentity(nil))
}
