package k8stest

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Clientset adapts a client-go clientset (the fake one, in tests) to the
// Kubernetes source's k8s.Client: its lists and watches go through the
// clientset's typed clients, so a fake's reactors and recorded actions
// see them as they would the agent's own requests.
func Clientset(c kubernetes.Interface) *ClientsetClient { return &ClientsetClient{c} }

// ClientsetClient is a k8s.Client over a clientset.
type ClientsetClient struct{ c kubernetes.Interface }

// List lists resource in all namespaces.
func (a *ClientsetClient) List(ctx context.Context, resource string, opts metav1.ListOptions) (runtime.Object, error) {
	r, err := a.resource(resource)
	if err != nil {
		return nil, err
	}
	return r.list(ctx, opts)
}

// Watch watches resource in all namespaces.
func (a *ClientsetClient) Watch(ctx context.Context, resource string, opts metav1.ListOptions) (watch.Interface, error) {
	r, err := a.resource(resource)
	if err != nil {
		return nil, err
	}
	return r.watch(ctx, opts)
}

// typed is a typed client of one resource, e.g. CoreV1().Pods("").
type typed[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

type listWatch struct {
	list  func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
}

func lw[L runtime.Object](c typed[L]) listWatch {
	return listWatch{
		list: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := c.List(ctx, opts)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		watch: c.Watch,
	}
}

func (a *ClientsetClient) resource(resource string) (listWatch, error) {
	switch resource {
	case "namespaces":
		return lw(a.c.CoreV1().Namespaces()), nil
	case "nodes":
		return lw(a.c.CoreV1().Nodes()), nil
	case "pods":
		return lw(a.c.CoreV1().Pods("")), nil
	case "services":
		return lw(a.c.CoreV1().Services("")), nil
	case "endpointslices":
		return lw(a.c.DiscoveryV1().EndpointSlices("")), nil
	case "networkpolicies":
		return lw(a.c.NetworkingV1().NetworkPolicies("")), nil
	}
	return listWatch{}, fmt.Errorf("no client for resource %q", resource)
}

// DaemonSetMeta gets a DaemonSet and returns its metadata.
func (a *ClientsetClient) DaemonSetMeta(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	ds, err := a.c.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return &metav1.PartialObjectMetadata{TypeMeta: ds.TypeMeta, ObjectMeta: ds.ObjectMeta}, nil
}

// IsWatchListSemanticsUnSupported tells client-go's reflector whether the
// clientset can stream a list through a watch, as the clientset itself
// would (the fake one cannot).
func (a *ClientsetClient) IsWatchListSemanticsUnSupported() bool {
	u, ok := a.c.(interface{ IsWatchListSemanticsUnSupported() bool })
	return ok && u.IsWatchListSemanticsUnSupported()
}
