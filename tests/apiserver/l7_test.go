package apiserver

// SluiceL7Policy on a real API server: the CRD of daemonset/ is accepted
// and its objects are served to the agent's Kubernetes source; the
// schema refuses what it can express (422, naming the field) and the
// agent refuses the rest (regular expressions) with the field, keeping
// the last good version; a CRD installed after the agent started is
// picked up without a restart.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

var crds = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func dynamicClient(t *testing.T, kubeconfig string) dynamic.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	cfg.QPS, cfg.Burst = -1, 0
	d, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	return d
}

// installCRD creates the SluiceL7Policy and ClusterNetworkPolicy CRDs of
// daemonset/ and waits until the API server serves them.
func installCRD(t *testing.T, d dynamic.Interface) {
	t.Helper()
	installCRDFile(t, d, "crd-sluicel7policies.yaml", v1alpha1.SluiceL7Policies)
	installCRDFile(t, d, "crd-clusternetworkpolicies.yaml", k8sconv.ClusterNetworkPolicies)
}

// installCRDFile creates the CRD of daemonset/file and waits until the API
// server serves res.
func installCRDFile(t *testing.T, d dynamic.Interface, file string, res schema.GroupVersionResource) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(manifestDir, file))
	require.NoError(t, err)
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal(data, &u.Object))
	ctx := context.Background()
	_, err = d.Resource(crds).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "the API server accepts the CRD")
	require.Eventually(t, func() bool {
		got, err := d.Resource(crds).Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	}, waitFor, 50*time.Millisecond, "the CRD is established")
	// Established is set before every API server handler serves it.
	require.Eventually(t, func() bool {
		_, err := d.Resource(res).List(ctx, metav1.ListOptions{})
		return err == nil
	}, waitFor, 50*time.Millisecond)
}

func TestL7PolicyCRDOnARealAPIServer(t *testing.T) {
	cp := startBareControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	d := dynamicClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	require.NoError(t, createNamespace(ctx, admin, "shop", nil))

	// The agent starts before the CRD exists: it runs, without L7 policy,
	// and says why.
	src, store := startSource(t, cp.APIServer.AdminKubeconfig, k8s.Options{})
	require.Eventually(t, func() bool { return len(src.Errors()) == 2 }, waitFor, 20*time.Millisecond)
	assert.Contains(t, src.Errors()[0].Error(), "sluicel7policies are not served by the API server")
	assert.Contains(t, src.Errors()[1].Error(), "clusternetworkpolicies are not served by the API server")

	installCRD(t, d)
	res := d.Resource(v1alpha1.SluiceL7Policies).Namespace("shop")
	p := k8stest.L7Policy("shop", "api", "web", 8080)
	p.Spec.Ports[0].RateLimit = &v1alpha1.RateLimit{Requests: 10, Per: "1m"}
	_, err := res.Create(ctx, k8stest.Unstructured(p), metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err)
	key := model.Key{Kind: model.KindL7Policy, Namespace: "shop", Name: "api"}
	// The informer lists again after its backoff (under a minute).
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return ok }, time.Minute, 50*time.Millisecond,
		"a CRD installed later is picked up: %s", sourceErrors(src))
	o, _ := store.Snapshot().Get(key)
	assert.Equal(t, []model.HTTPRule{{
		Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"},
		RateLimit: &l7.RateLimit{Requests: 10, Per: time.Minute, Burst: 10},
	}}, o.(*model.L7Policy).Ports[0].HTTP)
	require.Eventually(t, func() bool { return len(src.Errors()) == 0 }, waitFor, 20*time.Millisecond, "%s", sourceErrors(src))

	// What the schema expresses, the API server refuses (422, naming the
	// field), and the agent never sees.
	for name, mutate := range map[string]func(*v1alpha1.SluiceL7Policy){
		"two paths": func(p *v1alpha1.SluiceL7Policy) { p.Spec.Ports[0].Rules.HTTP[0].PathExact = "/x" },
		"no rules":  func(p *v1alpha1.SluiceL7Policy) { p.Spec.Ports[0].Rules.HTTP = nil },
		"udp":       func(p *v1alpha1.SluiceL7Policy) { p.Spec.Ports[0].Protocol = "UDP" },
		"burst":     func(p *v1alpha1.SluiceL7Policy) { p.Spec.Ports[0].RateLimit.Burst = 5 },
		"period":    func(p *v1alpha1.SluiceL7Policy) { p.Spec.Ports[0].RateLimit.Per = "soon" },
		"ipBlock": func(p *v1alpha1.SluiceL7Policy) {
			p.Spec.Ports[0].From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: &metav1.LabelSelector{}}}
		},
		"jwks and secret": func(p *v1alpha1.SluiceL7Policy) {
			p.Spec.Ports[0].JWT = &v1alpha1.JWT{Issuer: "i", JWKS: `{"keys":[{}]}`, JWKSSecretRef: &v1alpha1.SecretKeySelector{Name: "a", Key: "b"}}
		},
		"claims without jwt": func(p *v1alpha1.SluiceL7Policy) {
			p.Spec.Ports[0].Rules.HTTP[0].JWTClaims = []v1alpha1.ClaimMatch{{Claim: "a", Values: []string{"b"}}}
		},
	} {
		bad := k8stest.L7Policy("shop", "bad", "web", 8080)
		bad.Spec.Ports[0].RateLimit = &v1alpha1.RateLimit{Requests: 10}
		mutate(bad)
		_, err := res.Create(ctx, k8stest.Unstructured(bad), metav1.CreateOptions{FieldValidation: "Strict"})
		require.Error(t, err, name)
		assert.True(t, apierrors.IsInvalid(err), "%s: %v", name, err)
		assert.Contains(t, err.Error(), "spec.ports[0]", name)
		t.Logf("%s: %v", name, err)
	}

	// What it cannot (a regular expression), the agent refuses with the
	// field, and keeps the last good version.
	cur, err := res.Get(ctx, "api", metav1.GetOptions{})
	require.NoError(t, err)
	ports, _, _ := unstructured.NestedSlice(cur.Object, "spec", "ports")
	rule := ports[0].(map[string]any)["rules"].(map[string]any)["http"].([]any)[0].(map[string]any)
	delete(rule, "pathPrefix")
	rule["path"] = "/api/(["
	require.NoError(t, unstructured.SetNestedSlice(cur.Object, ports, "spec", "ports"))
	_, err = res.Update(ctx, cur, metav1.UpdateOptions{FieldValidation: "Strict"})
	require.NoError(t, err, "the schema cannot check a regular expression")
	require.Eventually(t, func() bool { return len(src.Errors()) == 1 }, waitFor, 20*time.Millisecond)
	var oe *k8s.ObjectError
	require.ErrorAs(t, src.Errors()[0], &oe)
	assert.Equal(t, key, oe.Object)
	assert.Equal(t, "spec.ports[0].rules.http[0].path", oe.Field)
	assert.True(t, oe.Kept)
	o, _ = store.Snapshot().Get(key)
	assert.Equal(t, l7.PathPrefix, o.(*model.L7Policy).Ports[0].HTTP[0].Path.Kind)

	require.NoError(t, res.Delete(ctx, "api", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return !ok }, waitFor, 20*time.Millisecond)
}
