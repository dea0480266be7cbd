package k8stest

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// Clientset adapts a client-go clientset (the fake one, in tests) to the
// Kubernetes source's k8s.Client: its lists and watches go through the
// clientset's typed clients, so a fake's reactors and recorded actions
// see them as they would the agent's own requests. SluiceL7Policies are
// read through the dynamic client set by WithDynamic; without one, the
// resource is not served, as on a cluster without the CRD.
func Clientset(c kubernetes.Interface) *ClientsetClient { return &ClientsetClient{c: c} }

// ClientsetClient is a k8s.Client over a clientset.
type ClientsetClient struct {
	c   kubernetes.Interface
	dyn dynamic.Interface
}

// WithDynamic serves Sluice's own kinds from d (a fake dynamic client,
// see NewDynamic).
func (a *ClientsetClient) WithDynamic(d dynamic.Interface) *ClientsetClient {
	a.dyn = d
	return a
}

// NewDynamic is a fake dynamic client that serves SluiceL7Policies, with
// objects (*unstructured.Unstructured) already in it.
func NewDynamic(objects ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{
			v1alpha1.SluiceL7Policies:      v1alpha1.KindSluiceL7Policy + "List",
			k8sconv.ClusterNetworkPolicies: "ClusterNetworkPolicyList",
		}, objects...)
}

// List lists resource in namespace (all of them if empty).
func (a *ClientsetClient) List(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (runtime.Object, error) {
	if gvr, ok := dynamicResource(resource); ok {
		if a.dyn == nil {
			return nil, notServed(gvr)
		}
		return a.dyn.Resource(gvr).Namespace(namespace).List(ctx, opts)
	}
	r, err := a.resource(namespace, resource)
	if err != nil {
		return nil, err
	}
	return r.list(ctx, opts)
}

// Watch watches resource in namespace (all of them if empty).
func (a *ClientsetClient) Watch(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (watch.Interface, error) {
	if gvr, ok := dynamicResource(resource); ok {
		if a.dyn == nil {
			return nil, notServed(gvr)
		}
		return a.dyn.Resource(gvr).Namespace(namespace).Watch(ctx, opts)
	}
	r, err := a.resource(namespace, resource)
	if err != nil {
		return nil, err
	}
	return r.watch(ctx, opts)
}

// notServed is the API server's answer for a resource it does not serve.
func notServed(gvr schema.GroupVersionResource) error {
	return apierrors.NewNotFound(gvr.GroupResource(), "")
}

// dynamicResource is the custom kind's resource the agent reads through
// the dynamic client.
func dynamicResource(resource string) (schema.GroupVersionResource, bool) {
	switch resource {
	case v1alpha1.SluiceL7Policies.Resource:
		return v1alpha1.SluiceL7Policies, true
	case k8sconv.ClusterNetworkPolicies.Resource:
		return k8sconv.ClusterNetworkPolicies, true
	}
	return schema.GroupVersionResource{}, false
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

func (a *ClientsetClient) resource(ns, resource string) (listWatch, error) {
	switch resource {
	case "namespaces":
		return lw(a.c.CoreV1().Namespaces()), nil
	case "nodes":
		return lw(a.c.CoreV1().Nodes()), nil
	case "pods":
		return lw(a.c.CoreV1().Pods(ns)), nil
	case "services":
		return lw(a.c.CoreV1().Services(ns)), nil
	case "endpointslices":
		return lw(a.c.DiscoveryV1().EndpointSlices(ns)), nil
	case "networkpolicies":
		return lw(a.c.NetworkingV1().NetworkPolicies(ns)), nil
	case "secrets":
		return lw(a.c.CoreV1().Secrets(ns)), nil
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
