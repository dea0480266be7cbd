package apiserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// manifestDir is the DaemonSet install, relative to this package.
const manifestDir = "../../daemonset"

// applyManifest creates the objects of one YAML file of daemonset/ (its
// strict decoding is daemonset_test.go's business).
func applyManifest(t *testing.T, c kubernetes.Interface, file string) {
	t.Helper()
	f, err := os.Open(filepath.Join(manifestDir, file))
	require.NoError(t, err)
	defer f.Close()
	ctx := context.Background()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		var v any
		require.NoError(t, yaml.Unmarshal(doc, &v))
		if v == nil {
			continue // only comments
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		require.NoError(t, err, "%s", file)
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %T", file, obj)
		}
		require.NoError(t, err, "%s", file)
	}
}

// serviceAccountKubeconfig writes a kubeconfig with a token the API server
// issues for the service account (TokenRequest, as the kubelet gets the
// projected token of the DaemonSet's pods).
func serviceAccountKubeconfig(t *testing.T, cp *ControlPlane, c kubernetes.Interface, ns, name string) string {
	t.Helper()
	tr, err := c.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: k8stest.Ptr(int64(3600))},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	require.NoError(t, cp.APIServer.WriteTokenKubeconfig(path, "system:serviceaccount:"+ns+":"+name, tr.Status.Token))
	return path
}

// The DaemonSet's ServiceAccount, bound to exactly its ClusterRole and
// Role, is enough for the agent's source on a real API server with RBAC:
// every informer lists and watches (whichever of list or watch-list
// client-go picks against this server), SluiceL7Policies and the Secrets
// of its own namespace included, nothing is forbidden, changes keep
// coming. The same service account cannot write, read Secrets elsewhere,
// and one without the binding is refused, so the check can tell.
func TestDaemonSetClusterRoleIsEnough(t *testing.T) {
	cp := startControlPlane(t)
	admin := adminClient(t, cp.APIServer.AdminKubeconfig)
	ctx := context.Background()
	createShop(t, admin)
	_, err := admin.NetworkingV1().NetworkPolicies("shop").Create(ctx, allowFrom("client", intstr.FromInt32(8080)), metav1.CreateOptions{})
	require.NoError(t, err)
	for _, f := range []string{"namespace.yaml", "serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml", "role.yaml", "rolebinding.yaml"} {
		applyManifest(t, admin, f)
	}
	// A policy whose JWT key set is in a Secret of the agent's namespace.
	_, err = admin.CoreV1().Secrets("sluice-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sluice-system", Name: "issuer"},
		Data:       map[string][]byte{"jwks.json": []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pol := k8stest.L7Policy("shop", "api", "web", 8080)
	pol.Spec.Ports[0].JWT = &v1alpha1.JWT{Issuer: "https://issuer", JWKSSecretRef: &v1alpha1.SecretKeySelector{Name: "issuer", Key: "jwks.json"}}
	_, err = dynamicClient(t, cp.APIServer.AdminKubeconfig).Resource(v1alpha1.SluiceL7Policies).Namespace("shop").
		Create(ctx, k8stest.Unstructured(pol), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = dynamicClient(t, cp.APIServer.AdminKubeconfig).Resource(k8sconv.ClusterNetworkPolicies).
		Create(ctx, cnpUnstructured(t, guardrailPolicy()), metav1.CreateOptions{})
	require.NoError(t, err)
	kubeconfig := serviceAccountKubeconfig(t, cp, admin, "sluice-system", "sluice")

	src, store := startSource(t, kubeconfig, k8s.Options{NodeName: "node-1", SecretNamespace: "sluice-system"})
	assert.Empty(t, src.Errors(), "no forbidden list or watch")
	snap := store.Snapshot()
	assert.Contains(t, snap.Namespaces, "shop")
	assert.Contains(t, snap.Nodes, "node-1")
	assert.Contains(t, snap.Pods, model.NamespacedName{Namespace: "shop", Name: "web-1"})
	assert.Contains(t, snap.Services, model.NamespacedName{Namespace: "shop", Name: "web"})
	assert.Contains(t, snap.NetworkPolicies, model.NamespacedName{Namespace: "shop", Name: "web-from-client"})
	assert.NotEmpty(t, snap.EndpointSlices)
	require.Contains(t, snap.L7Policies, model.NamespacedName{Namespace: "shop", Name: "api"})
	assert.Contains(t, snap.L7Policies[model.NamespacedName{Namespace: "shop", Name: "api"}].Ports[0].JWT.JWKS, `"kty":"oct"`)
	assert.Contains(t, snap.ClusterPolicies, "guardrail", "ClusterNetworkPolicies are listed")

	// The watches are allowed too: a change arrives.
	require.NoError(t, admin.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "web-from-client", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, ok := store.Snapshot().NetworkPolicies[model.NamespacedName{Namespace: "shop", Name: "web-from-client"}]
		return !ok
	}, waitFor, 20*time.Millisecond)
	require.NoError(t, dynamicClient(t, cp.APIServer.AdminKubeconfig).Resource(k8sconv.ClusterNetworkPolicies).
		Delete(ctx, "guardrail", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := store.Snapshot().ClusterPolicies["guardrail"]; return !ok }, waitFor, 20*time.Millisecond,
		"a ClusterNetworkPolicy's deletion arrives over the watch")
	assert.Empty(t, src.Errors())

	// Least privilege: the agent's identity reads and nothing more (a
	// clientset with its credentials, which can ask for more than the
	// agent's own client does).
	agent := adminClient(t, kubeconfig)
	_, err = agent.CoreV1().Pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "get is not granted: %v", err)
	_, err = agent.CoreV1().Secrets("shop").List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "secrets outside its namespace are not granted: %v", err)
	_, err = agent.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "secrets cluster-wide are not granted: %v", err)
	_, err = agent.CoreV1().Secrets("sluice-system").Get(ctx, "issuer", metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "a get of a secret is not granted (the informer lists): %v", err)
	err = agent.CoreV1().Pods("shop").Delete(ctx, "web-1", metav1.DeleteOptions{})
	assert.True(t, apierrors.IsForbidden(err), "writes are not granted: %v", err)

	// Without the binding, the source cannot start and says what is
	// missing.
	_, err = admin.CoreV1().ServiceAccounts("sluice-system").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "unbound"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	client, err := k8s.NewClient(serviceAccountKubeconfig(t, cp, admin, "sluice-system", "unbound"))
	require.NoError(t, err)
	s, err := k8s.New(k8s.Options{Client: client})
	require.NoError(t, err)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = s.Start(sctx, model.NewStore())
	<-s.Done()
	require.Error(t, err)
	assert.ErrorContains(t, err, "not synced with the API server")
	assert.ErrorContains(t, err, "forbidden")
	assert.ErrorContains(t, err, "the agent's service account needs list and watch on")
}
