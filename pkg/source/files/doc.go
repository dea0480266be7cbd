// Package files is the source of truth for hosts without Kubernetes: it reads
// Kubernetes manifests (Namespace, Pod, Service, EndpointSlice, NetworkPolicy,
// Node, and Sluice's SluiceL7Policy) from a directory, watches it, and keeps
// a model.Store in step. It reads no Secrets: a SluiceL7Policy's JWT key
// set must be inline there.
//
// Manifests are decoded strictly with the real k8s.io/api types, so a typo
// that kubectl would reject is rejected here too, with the file, document,
// object and field in the message, instead of being silently ignored.
// Documents in the common subset of YAML go through a fast decoder
// (fastDecoder) that gives the same objects and leaves everything else,
// errors included, to the strict one; large files are decoded on every CPU,
// and a reload decodes only the files whose contents changed.
//
// A mistake in a file must never take traffic down, so the source serves the
// last good version of each file: a file that fails to parse is rejected as a
// whole and its previous objects stay in place until it is fixed; a missing
// or empty directory (an unmounted volume, a half-finished deploy) prunes
// nothing. The last good objects are saved to disk after every change so a
// restarted agent comes back with the same model even if the directory is
// broken at that moment.
//
// The agent reads the directory as root, so a file is refused, with an error
// naming it and its last good objects kept, when it leads out of the
// directory through a symlink (the links of a ConfigMap volume, through
// ..data, stay inside) or is larger than Options.MaxBytes (checked before
// reading, and never more than that is read).
package files
