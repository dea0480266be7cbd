package k8s

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// objectErrors are the source's *ObjectError, by object.
func objectErrors(s *Source) map[model.Key]*ObjectError {
	out := map[model.Key]*ObjectError{}
	for _, err := range s.Errors() {
		if oe, ok := err.(*ObjectError); ok {
			out[oe.Object] = oe
		}
	}
	return out
}

// SluiceL7Policies come from the dynamic client's list and watch into the
// model; an invalid update keeps the last good version and says which
// field is wrong.
func TestL7PoliciesFromTheAPI(t *testing.T) {
	ctx := context.Background()
	dyn := k8stest.NewDynamic(k8stest.Unstructured(k8stest.L7Policy("shop", "api", "web", 8080)))
	res := dyn.Resource(v1alpha1.SluiceL7Policies).Namespace("shop")
	client := fake.NewClientset()
	s, store := startSource(t, client, Options{Client: k8stest.Clientset(client).WithDynamic(dyn)})
	key := model.Key{Kind: model.KindL7Policy, Namespace: "shop", Name: "api"}

	got, ok := store.Snapshot().Get(key)
	require.True(t, ok, "listed at start")
	p := got.(*model.L7Policy)
	assert.Equal(t, model.PortNumber(8080), p.Ports[0].Port)
	assert.Equal(t, []model.HTTPRule{{Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}}}, p.Ports[0].HTTP)
	assert.Empty(t, s.Errors())

	// A watched update.
	upd := k8stest.L7Policy("shop", "api", "web", 8080)
	upd.Spec.Ports[0].Rules.HTTP[0].Method = "GET|HEAD"
	_, err := res.Update(ctx, k8stest.Unstructured(upd), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, _ := store.Snapshot().Get(key)
		return o.(*model.L7Policy).Ports[0].HTTP[0].Method == "GET|HEAD"
	}, waitFor, 10*time.Millisecond)

	// An invalid one (the CRD's schema cannot check a regular expression):
	// the last good version stays, and the error names the field.
	bad := k8stest.L7Policy("shop", "api", "web", 8080)
	bad.Spec.Ports[0].Rules.HTTP[0].Path = "/api/(["
	bad.Spec.Ports[0].Rules.HTTP[0].PathPrefix = ""
	_, err = res.Update(ctx, k8stest.Unstructured(bad), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return objectErrors(s)[key] != nil }, waitFor, 10*time.Millisecond)
	oe := objectErrors(s)[key]
	assert.Equal(t, "spec.ports[0].rules.http[0].path", oe.Field)
	assert.True(t, oe.Kept)
	o, _ := store.Snapshot().Get(key)
	assert.Equal(t, "GET|HEAD", o.(*model.L7Policy).Ports[0].HTTP[0].Method)

	require.NoError(t, res.Delete(ctx, "api", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, ok := store.Snapshot().Get(key); return !ok }, waitFor, 10*time.Millisecond)
	assert.Empty(t, s.Errors())
}

// Without Sluice's CRD the source starts all the same, with no L7 policy,
// and says why.
func TestL7PolicyCRDNotInstalled(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s := newSource(t, client, Options{Client: k8stest.Clientset(client)})
	store := model.NewStore()
	require.NoError(t, s.Start(ctx, store))
	t.Cleanup(func() { cancel(); <-s.Done() })
	assert.Empty(t, store.Snapshot().L7Policies)
	errs := s.Errors()
	require.Len(t, errs, 2, "neither CRD is installed")
	assert.Contains(t, errs[0].Error(), "sluicel7policies are not served by the API server, so none is in force (install daemonset/crd-sluicel7policies.yaml")
	assert.Contains(t, errs[1].Error(), "clusternetworkpolicies are not served by the API server, so none is in force (install daemonset/crd-clusternetworkpolicies.yaml")
}

const jwks = `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`

// A JWT key set from a Secret of the agent's namespace is read into the
// policy, and follows the Secret.
func TestL7PolicyJWKSFromSecret(t *testing.T) {
	ctx := context.Background()
	p := k8stest.L7Policy("shop", "api", "web", 8080)
	p.Spec.Ports[0].JWT = &v1alpha1.JWT{Issuer: "https://issuer", JWKSSecretRef: &v1alpha1.SecretKeySelector{Name: "issuer", Key: "jwks.json"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "sluice-system", Name: "issuer"}, Data: map[string][]byte{"jwks.json": []byte(jwks)}}
	// The same name elsewhere is not read.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "issuer"}, Data: map[string][]byte{"jwks.json": []byte("{}")}}
	client := fake.NewClientset(secret, other)
	dyn := k8stest.NewDynamic(k8stest.Unstructured(p))
	s, store := startSource(t, client, Options{Client: k8stest.Clientset(client).WithDynamic(dyn), SecretNamespace: "sluice-system"})
	key := model.Key{Kind: model.KindL7Policy, Namespace: "shop", Name: "api"}
	jwtOf := func() *model.JWTProvider {
		o, ok := store.Snapshot().Get(key)
		if !ok {
			return nil
		}
		return o.(*model.L7Policy).Ports[0].JWT
	}
	require.NotNil(t, jwtOf())
	assert.Equal(t, jwks, jwtOf().JWKS)
	assert.Equal(t, &model.SecretKeyRef{Namespace: "sluice-system", Name: "issuer", Key: "jwks.json"}, jwtOf().JWKSSecret)
	assert.Empty(t, s.Errors())

	// A rotated key set reaches the policy.
	rotated := `{"keys":[{"kty":"oct","k":"bmV3"}]}`
	secret.Data["jwks.json"] = []byte(rotated)
	_, err := client.CoreV1().Secrets("sluice-system").Update(ctx, secret, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return jwtOf().JWKS == rotated }, waitFor, 10*time.Millisecond)

	// Gone: the policy keeps its last key set, and the error says why.
	require.NoError(t, client.CoreV1().Secrets("sluice-system").Delete(ctx, "issuer", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return objectErrors(s)[key] != nil }, waitFor, 10*time.Millisecond)
	oe := objectErrors(s)[key]
	assert.Equal(t, "spec.ports[0].jwt.jwksSecretRef", oe.Field)
	assert.EqualError(t, oe.Err, "secret sluice-system/issuer not found (Secrets are read from the agent's namespace sluice-system only)")
	assert.Equal(t, rotated, jwtOf().JWKS)

	// Back, with a key that is not a key set.
	secret.ResourceVersion = ""
	secret.Data["jwks.json"] = []byte(`{"keys":[]}`)
	_, err = client.CoreV1().Secrets("sluice-system").Create(ctx, secret, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		oe := objectErrors(s)[key]
		return oe != nil && oe.Err.Error() == `secret sluice-system/issuer[jwks.json]: a JSON Web Key Set needs at least one key in "keys"`
	}, waitFor, 10*time.Millisecond)

	// Fixed.
	secret.Data["jwks.json"] = []byte(jwks)
	_, err = client.CoreV1().Secrets("sluice-system").Update(ctx, secret, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return jwtOf().JWKS == jwks && len(s.Errors()) == 0 }, waitFor, 10*time.Millisecond)
}

// An agent without a namespace of its own reads no Secret, and says so.
func TestL7PolicyJWKSWithoutSecretNamespace(t *testing.T) {
	p := k8stest.L7Policy("shop", "api", "web", 8080)
	p.Spec.Ports[0].JWT = &v1alpha1.JWT{Issuer: "https://issuer", JWKSSecretRef: &v1alpha1.SecretKeySelector{Name: "issuer", Key: "jwks.json"}}
	client := fake.NewClientset()
	s, store := startSource(t, client, Options{Client: k8stest.Clientset(client).WithDynamic(k8stest.NewDynamic(k8stest.Unstructured(p)))})
	assert.Empty(t, store.Snapshot().L7Policies)
	oe := objectErrors(s)[model.Key{Kind: model.KindL7Policy, Namespace: "shop", Name: "api"}]
	require.NotNil(t, oe)
	assert.Equal(t, "SluiceL7Policy shop/api: spec.ports[0].jwt.jwksSecretRef: the agent reads no Secrets (it has no namespace of its own: set --jwks-secret-namespace); put the key set inline in jwks; ignored, not in the model", oe.Error())
	for _, a := range client.Actions() {
		assert.NotEqual(t, "secrets", a.GetResource().Resource, "no Secret is read")
	}
}
