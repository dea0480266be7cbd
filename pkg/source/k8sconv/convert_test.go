package k8sconv

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestEndpointConditions(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name string
		in   discoveryv1.EndpointConditions
		want [3]bool // ready, serving, terminating
	}{
		{"all nil: ready and serving", discoveryv1.EndpointConditions{}, [3]bool{true, true, false}},
		{"not ready, serving nil follows ready", discoveryv1.EndpointConditions{Ready: &no}, [3]bool{false, false, false}},
		{"terminating but serving", discoveryv1.EndpointConditions{Ready: &no, Serving: &yes, Terminating: &yes}, [3]bool{false, true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := EndpointSlice(&discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: "s", Namespace: "n"},
				AddressType: discoveryv1.AddressTypeIPv6,
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"fd00::1"}, Conditions: tt.in}},
			})
			require.NoError(t, err)
			e := out.Endpoints[0]
			assert.Equal(t, tt.want, [3]bool{e.Ready, e.Serving, e.Terminating})
		})
	}
}

func TestEndpointAddressFamilyMustMatch(t *testing.T) {
	_, err := EndpointSlice(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "s", Namespace: "n"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"fd00::1"}}},
	})
	var fe *FieldError
	require.True(t, errors.As(err, &fe))
	assert.Equal(t, "endpoints[0].addresses[0]", fe.Field)
}

func TestServiceDefaults(t *testing.T) {
	out, err := Service(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "n", Annotations: map[string]string{"other/x": "1"}},
		Spec: corev1.ServiceSpec{
			ClusterIP:       "None",
			SessionAffinity: corev1.ServiceAffinityClientIP,
			Ports:           []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}},
		},
	})
	require.NoError(t, err)
	assert.Equal(t, &model.Service{
		Namespace: "n", Name: "s", Type: model.ServiceTypeClusterIP, Headless: true,
		Ports:                         []model.ServicePort{{Protocol: model.ProtocolUDP, Port: 53, TargetPort: model.PortNumber(53)}},
		SessionAffinity:               model.SessionAffinityClientIP,
		SessionAffinityTimeoutSeconds: 10800,
		InternalTrafficPolicy:         model.TrafficPolicyCluster,
	}, out)
}

func TestLabelSelectorValidation(t *testing.T) {
	tests := []struct {
		req   metav1.LabelSelectorRequirement
		field string
	}{
		{metav1.LabelSelectorRequirement{Key: "a", Operator: "In"}, "s.matchExpressions[0].values"},
		{metav1.LabelSelectorRequirement{Key: "a", Operator: "Exists", Values: []string{"x"}}, "s.matchExpressions[0].values"},
		{metav1.LabelSelectorRequirement{Key: "a", Operator: "Gt", Values: []string{"1"}}, "s.matchExpressions[0].operator"},
		{metav1.LabelSelectorRequirement{Operator: "Exists"}, "s.matchExpressions[0].key"},
	}
	for _, tt := range tests {
		_, err := LabelSelector("s", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{tt.req}})
		var fe *FieldError
		require.True(t, errors.As(err, &fe), "%+v", tt.req)
		assert.Equal(t, tt.field, fe.Field)
	}
	sel, err := LabelSelector("s", nil)
	require.NoError(t, err)
	assert.Nil(t, sel)
}
