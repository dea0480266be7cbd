package k8s

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// Client is what the source reads from the API server: lists and watches,
// in all namespaces (namespace ""), of the resources it converts
// ("namespaces", "nodes", "pods", "services", "endpointslices",
// "networkpolicies", and "sluicel7policies", which it receives as
// *unstructured.Unstructured), of "secrets" in the agent's own namespace,
// and the metadata of the agent's DaemonSet. NewClient returns the
// agent's; k8stest.Clientset adapts a client-go clientset (the fake one in
// tests).
type Client interface {
	List(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (runtime.Object, error)
	Watch(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (watch.Interface, error)
	DaemonSetGetter
}

// DaemonSetGetter reads a DaemonSet's metadata (DaemonSetRemoved).
type DaemonSetGetter interface {
	DaemonSetMeta(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error)
}

// InCluster reports whether the in-cluster configuration can be used: the
// kubelet sets KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT in every
// container it starts.
func InCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// restClient is the agent's Client: one REST client per API group it
// reads, sharing one connection, with a scheme of only the three API
// groups whose types it decodes.
//
// It is not a client-go clientset on purpose: the clientset (and the
// informer factory) import every API group of Kubernetes, whose package
// initialisation registers some sixty groups' types, conversions and
// defaults in a global scheme at every start, which costs the agent about
// 7 MiB of RSS even on an edge host that never talks to an API server.
type restClient struct {
	resources map[string]restResource
	params    runtime.ParameterCodec
	meta      metadata.Interface
	// dynamic reads Sluice's own kinds, which no scheme here knows: as
	// unstructured objects, converted by the source.
	dynamic dynamic.Interface
}

// restResource is one resource the source reads.
type restResource struct {
	client  rest.Interface
	newList func() runtime.Object
}

// NewClient returns an API server client configured from the kubeconfig file
// at path, or from the pod's service account when path is empty.
func NewClient(path string) (Client, error) {
	var (
		cfg *rest.Config
		err error
	)
	if path == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	cfg.UserAgent = "sluice-agent " + rest.DefaultKubernetesUserAgent()
	// Protobuf for the built-in types this client reads: with every pod of
	// the cluster listed at start, it decodes several times faster and with
	// less garbage than JSON.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	c, err := newRESTClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	return c, nil
}

func newRESTClient(cfg *rest.Config) (*restClient, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	codecs := serializer.NewCodecFactory(scheme)
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	group := func(gv schema.GroupVersion) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = "/apis"
		if gv.Group == "" {
			c.APIPath = "/api"
		}
		c.NegotiatedSerializer = codecs.WithoutConversion()
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	core, err := group(corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	discovery, err := group(discoveryv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	networking, err := group(networkingv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfigAndClient(rest.CopyConfig(cfg), httpClient)
	if err != nil {
		return nil, err
	}
	// JSON: custom resources have no protobuf form.
	dyn, err := dynamic.NewForConfigAndClient(dynamic.ConfigFor(cfg), httpClient)
	if err != nil {
		return nil, err
	}
	return &restClient{
		params:  runtime.NewParameterCodec(scheme),
		meta:    meta,
		dynamic: dyn,
		resources: map[string]restResource{
			"namespaces":      {core, func() runtime.Object { return &corev1.NamespaceList{} }},
			"nodes":           {core, func() runtime.Object { return &corev1.NodeList{} }},
			"pods":            {core, func() runtime.Object { return &corev1.PodList{} }},
			"services":        {core, func() runtime.Object { return &corev1.ServiceList{} }},
			"endpointslices":  {discovery, func() runtime.Object { return &discoveryv1.EndpointSliceList{} }},
			"networkpolicies": {networking, func() runtime.Object { return &networkingv1.NetworkPolicyList{} }},
			"secrets":         {core, func() runtime.Object { return &corev1.SecretList{} }},
		},
	}, nil
}

// request is a GET of resource in namespace (all of them if empty) with
// opts, as client-go's typed clients make it.
func (c *restClient) request(namespace, resource string, opts *metav1.ListOptions) (*rest.Request, restResource, error) {
	r, ok := c.resources[resource]
	if !ok {
		return nil, r, fmt.Errorf("no client for resource %q", resource)
	}
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	return r.client.Get().Namespace(namespace).Resource(resource).VersionedParams(opts, c.params).Timeout(timeout), r, nil
}

// List implements Client.
func (c *restClient) List(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (runtime.Object, error) {
	if gvr, ok := DynamicResources[resource]; ok {
		return c.dynamic.Resource(gvr).Namespace(namespace).List(ctx, opts)
	}
	req, r, err := c.request(namespace, resource, &opts)
	if err != nil {
		return nil, err
	}
	out := r.newList()
	if err := req.Do(ctx).Into(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Watch implements Client.
func (c *restClient) Watch(ctx context.Context, namespace, resource string, opts metav1.ListOptions) (watch.Interface, error) {
	if gvr, ok := DynamicResources[resource]; ok {
		return c.dynamic.Resource(gvr).Namespace(namespace).Watch(ctx, opts)
	}
	opts.Watch = true
	req, _, err := c.request(namespace, resource, &opts)
	if err != nil {
		return nil, err
	}
	return req.Watch(ctx)
}

// DynamicResources are the resources of custom kinds, read through the
// dynamic client (no generated clientset), by resource name.
var DynamicResources = map[string]schema.GroupVersionResource{
	v1alpha1.SluiceL7Policies.Resource:      v1alpha1.SluiceL7Policies,
	k8sconv.ClusterNetworkPolicies.Resource: k8sconv.ClusterNetworkPolicies,
}

var daemonSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}

// DaemonSetMeta implements DaemonSetGetter: a GET of the DaemonSet as
// metadata only (the same request RBAC-wise as a full GET).
func (c *restClient) DaemonSetMeta(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	return c.meta.Resource(daemonSets).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
}
