package k8s

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// cached is what the informers' caches hold instead of an API object: the
// object converted to the model, or the error converting it gave, and the
// metadata the informers need (the cache key and resource version).
//
// The model needs the converted objects anyway, so a cache of them costs
// only these few words per object; a cache of API objects, even of copies
// slimmed to what the conversion reads, held a second copy of the cluster
// (67 MiB of them at 10,000 pods and 5,000 services, slices and policies).
type cached struct {
	name, namespace, resourceVersion string
	obj                              model.Object // nil when err is set
	err                              error
}

// GetObjectMeta implements metav1.ObjectMetaAccessor, which is how the
// informers' key functions (cache.MetaNamespaceKeyFunc) read a cached
// object's name and namespace.
func (c *cached) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: c.name, Namespace: c.namespace, ResourceVersion: c.resourceVersion}
}

// GetObjectKind implements runtime.Object.
func (c *cached) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object; model objects are immutable,
// so they are shared.
func (c *cached) DeepCopyObject() runtime.Object {
	cp := *c
	return &cp
}

// toModel is the informers' transform (cache.TransformFunc): it converts
// each object with k8sconv as it enters the cache, so the cache holds the
// model object (see cached) and the API object is garbage at once.
// Objects of other types (the informers' deletion tombstones never reach
// a transform) and objects already converted are returned unchanged: the
// transform is idempotent, as client-go requires.
func toModel(obj any) (any, error) {
	switch obj.(type) {
	case *corev1.Namespace, *corev1.Node, *corev1.Pod, *corev1.Service, *discoveryv1.EndpointSlice, *networkingv1.NetworkPolicy,
		*unstructured.Unstructured:
	default:
		return obj, nil
	}
	m := obj.(metav1.Object)
	c := &cached{name: m.GetName(), namespace: m.GetNamespace(), resourceVersion: m.GetResourceVersion()}
	c.obj, c.err = convertObject(obj)
	if c.err != nil {
		c.obj = nil
	}
	return c, nil
}

// converted is the model form of a cached object: converted by the
// transform, or now when the cache holds API objects (tests turn the
// transform off to measure what it saves).
func converted(obj any) (model.Object, error) {
	if c, ok := obj.(*cached); ok {
		return c.obj, c.err
	}
	return convertObject(obj)
}

// convertObject converts an API object; Sluice's own kinds arrive
// unstructured (the API server has already checked them against the CRD's
// schema and pruned unknown fields).
func convertObject(obj any) (model.Object, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return k8sconv.Object(obj)
	}
	switch gvk := u.GroupVersionKind(); gvk {
	case v1alpha1.GroupVersion.WithKind(v1alpha1.KindSluiceL7Policy):
		var p v1alpha1.SluiceL7Policy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.UnstructuredContent(), &p, true); err != nil {
			return nil, err
		}
		return k8sconv.L7Policy(&p)
	case k8sconv.ClusterNetworkPolicyKind:
		var p npv1alpha2.ClusterNetworkPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.UnstructuredContent(), &p, true); err != nil {
			return nil, err
		}
		return k8sconv.ClusterNetworkPolicy(&p)
	default:
		return nil, fmt.Errorf("unsupported object %s", gvk)
	}
}
