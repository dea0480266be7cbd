package k8s

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// DaemonSetRemoved reports whether the DaemonSet namespace/name is being
// removed, and why: it is gone, it has a deletion timestamp, or the
// request is refused as unauthenticated or forbidden, which is how the
// removal of the install looks once its service account or Role went
// first (`kubectl delete -k` deletes them together). It returns an error
// when it cannot tell (the API server is unreachable).
//
// The agent asks this when it stops, to remove sluice-cni from the node's
// network configuration only when the whole install goes: an agent
// stopped by a rolling update or a node drain must leave it, or pods
// created before the next agent runs would start unpoliced.
func DaemonSetRemoved(ctx context.Context, client DaemonSetGetter, namespace, name string) (bool, string, error) {
	ds, err := client.DaemonSetMeta(ctx, namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		return true, fmt.Sprintf("DaemonSet %s/%s is gone", namespace, name), nil
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return true, fmt.Sprintf("the agent may no longer read DaemonSet %s/%s (its service account or Role was removed): %v", namespace, name, err), nil
	case err != nil:
		return false, "", fmt.Errorf("get DaemonSet %s/%s: %w", namespace, name, err)
	case ds.DeletionTimestamp != nil:
		return true, fmt.Sprintf("DaemonSet %s/%s is being deleted", namespace, name), nil
	}
	return false, fmt.Sprintf("DaemonSet %s/%s stays", namespace, name), nil
}
