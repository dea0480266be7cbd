package k8s

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// A SluiceL7Policy's JWT key set may come from a Secret (jwksSecretRef).
// The source reads the Secrets of one namespace, Options.SecretNamespace
// (the agent's), and resolves each policy against them when it converts
// it; a change of a Secret marks the policies that read it. Reading the
// Secrets of every namespace would let every node's agent read every
// Secret of the cluster; one namespace is what a Role can grant.

// errNoSecretNamespace refuses a jwksSecretRef when the source reads no
// Secrets.
var errNoSecretNamespace = errors.New("the agent reads no Secrets (it has no namespace of its own: set --jwks-secret-namespace); put the key set inline in jwks")

// resolveSecrets returns p with its JWT key sets read from their Secrets,
// and records which Secrets p reads.
func (s *Source) resolveSecrets(k model.Key, p *model.L7Policy) (model.Object, error) {
	var names []string
	for _, port := range p.Ports {
		if port.JWT != nil && port.JWT.JWKSSecret != nil {
			names = append(names, port.JWT.JWKSSecret.Name)
		}
	}
	s.setSecretUsers(k, names)
	if len(names) == 0 {
		return p, nil
	}
	out, err := k8sconv.ResolveL7Secrets(p, s.opts.SecretNamespace, s.secretKey)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// secretKey reads one key of a Secret from the informer's cache.
func (s *Source) secretKey(ref model.SecretKeyRef) ([]byte, error) {
	if s.secrets == nil {
		return nil, errNoSecretNamespace
	}
	obj, ok, err := s.secrets.informer.GetStore().GetByKey(ref.Namespace + "/" + ref.Name)
	if err != nil {
		return nil, err
	}
	sec, isSecret := obj.(*corev1.Secret)
	if !ok || !isSecret {
		return nil, fmt.Errorf("secret %s/%s not found (Secrets are read from the agent's namespace %s only)", ref.Namespace, ref.Name, ref.Namespace)
	}
	b, ok := sec.Data[ref.Key]
	if !ok {
		return nil, fmt.Errorf("secret %s/%s has no key %q", ref.Namespace, ref.Name, ref.Key)
	}
	return b, nil
}

// setSecretUsers records that policy k reads the Secrets names (none: it
// is gone or reads none).
func (s *Source) setSecretUsers(k model.Key, names []string) {
	if k.Kind != model.KindL7Policy {
		return
	}
	s.dirtyMu.Lock()
	defer s.dirtyMu.Unlock()
	for name, users := range s.secretUsers {
		delete(users, k)
		if len(users) == 0 {
			delete(s.secretUsers, name)
		}
	}
	for _, name := range names {
		users := s.secretUsers[name]
		if users == nil {
			users = map[model.Key]struct{}{}
			s.secretUsers[name] = users
		}
		users[k] = struct{}{}
	}
}

// secretHandler marks the policies that read a changed Secret.
func (s *Source) secretHandler() cache.ResourceEventHandler {
	return s.marker(func(_, name string) bool {
		for k := range s.secretUsers[name] {
			s.dirty[k] = struct{}{}
		}
		return len(s.secretUsers[name]) > 0
	})
}
