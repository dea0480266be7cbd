// Package v1alpha1 holds the Kubernetes API types of Sluice's own kinds
// (API group sluice.io, version v1alpha1): SluiceL7Policy, whose
// CustomResourceDefinition is daemonset/crd-sluicel7policies.yaml.
//
// They are the wire form, what kubectl and the files source's manifests
// hold, decoded strictly so that a misspelt field is an error; k8sconv
// validates them and converts them to the model (model.L7Policy). The
// field names of HTTP rules follow Cilium's PortRuleHTTP, so that its
// users translate their rules mechanically.
package v1alpha1
