package k8stest

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

// L7Policy is a SluiceL7Policy for the pods labelled app=app: on port,
// GET under /api/ is allowed.
func L7Policy(ns, name, app string, port int32) *v1alpha1.SluiceL7Policy {
	return &v1alpha1.SluiceL7Policy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.KindSluiceL7Policy},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.SluiceL7PolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Ports: []v1alpha1.PortRule{{
				Port:  intstr.FromInt32(port),
				Rules: v1alpha1.Rules{HTTP: []v1alpha1.PortRuleHTTP{{Method: "GET", PathPrefix: "/api/"}}},
			}},
		},
	}
}

// Unstructured is p as the dynamic client carries it.
func Unstructured(p *v1alpha1.SluiceL7Policy) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		panic(err) // a typed object always converts
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind(v1alpha1.KindSluiceL7Policy)
	return u
}
