package k8s

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
)

func TestDaemonSetRemoved(t *testing.T) {
	ctx := context.Background()
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "sluice-system", Name: "sluice"}}
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}

	removed, why, err := DaemonSetRemoved(ctx, k8stest.Clientset(fake.NewClientset(ds)), "sluice-system", "sluice")
	require.NoError(t, err)
	assert.False(t, removed, "a rolling update or a drain keeps the install")
	assert.Contains(t, why, "stays")

	deleting := ds.DeepCopy()
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	deleting.Finalizers = []string{"foregroundDeletion"}
	removed, why, err = DaemonSetRemoved(ctx, k8stest.Clientset(fake.NewClientset(deleting)), "sluice-system", "sluice")
	require.NoError(t, err)
	assert.True(t, removed)
	assert.Contains(t, why, "being deleted")

	removed, why, err = DaemonSetRemoved(ctx, k8stest.Clientset(fake.NewClientset()), "sluice-system", "sluice")
	require.NoError(t, err)
	assert.True(t, removed)
	assert.Contains(t, why, "gone")

	for name, fail := range map[string]error{
		"forbidden":    apierrors.NewForbidden(gr, "sluice", nil),
		"unauthorized": apierrors.NewUnauthorized("token of a deleted service account"),
	} {
		c := fake.NewClientset(ds)
		c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, fail })
		removed, _, err := DaemonSetRemoved(ctx, k8stest.Clientset(c), "sluice-system", "sluice")
		require.NoError(t, err, name)
		assert.True(t, removed, name)
	}

	c := fake.NewClientset(ds)
	c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	removed, _, err = DaemonSetRemoved(ctx, k8stest.Clientset(c), "sluice-system", "sluice")
	require.Error(t, err, "cannot tell: the caller keeps the install")
	assert.False(t, removed)
}
