package files

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// Sentinel errors wrapped by ManifestError.Err, for errors.Is.
var (
	// ErrUnsupportedKind: the document's kind or apiVersion is not one the
	// source reads.
	ErrUnsupportedKind = errors.New("unsupported kind")
	// ErrDuplicate: the same object is defined twice.
	ErrDuplicate = errors.New("duplicate object")
)

// ManifestError is a problem with one document of one manifest file.
type ManifestError struct {
	// File is the file name relative to the manifest directory.
	File string
	// Doc is the 1-based index of the document among the file's non-empty
	// documents (comment-only documents are not counted); 0 when the error
	// concerns the whole file.
	Doc int
	// Object is e.g. "Pod default/web"; empty when it could not be decoded.
	Object string
	// Field is the path of the offending field, e.g.
	// "spec.containers[0].ports[0].containerPort"; empty if not known.
	Field string
	Err   error

	// fieldInErr is set when Err's message already names the field (strict
	// decoding errors do), so Error does not say it twice.
	fieldInErr bool
}

func (e *ManifestError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Doc > 0 {
		b.WriteString(": document ")
		b.WriteString(strconv.Itoa(e.Doc))
	}
	if e.Object != "" {
		b.WriteString(" (" + e.Object + ")")
	}
	b.WriteString(": ")
	if e.Field != "" && !e.fieldInErr {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *ManifestError) Unwrap() error { return e.Err }

// kindInfo describes a kind the source reads.
type kindInfo struct {
	apiVersion string
	namespaced bool
	newObj     func() metav1.Object
}

var kinds = map[string]kindInfo{
	"Namespace":                 {"v1", false, func() metav1.Object { return &corev1.Namespace{} }},
	"Node":                      {"v1", false, func() metav1.Object { return &corev1.Node{} }},
	"Pod":                       {"v1", true, func() metav1.Object { return &corev1.Pod{} }},
	"Service":                   {"v1", true, func() metav1.Object { return &corev1.Service{} }},
	"EndpointSlice":             {"discovery.k8s.io/v1", true, func() metav1.Object { return &discoveryv1.EndpointSlice{} }},
	"NetworkPolicy":             {"networking.k8s.io/v1", true, func() metav1.Object { return &networkingv1.NetworkPolicy{} }},
	v1alpha1.KindSluiceL7Policy: {v1alpha1.GroupVersion.String(), true, func() metav1.Object { return &v1alpha1.SluiceL7Policy{} }},
	"ClusterNetworkPolicy":      {npv1alpha2.GroupVersion.String(), false, func() metav1.Object { return &npv1alpha2.ClusterNetworkPolicy{} }},
}

const supportedKinds = "Namespace, Node, Pod, Service (v1), EndpointSlice (discovery.k8s.io/v1), NetworkPolicy (networking.k8s.io/v1), SluiceL7Policy (sluice.io/v1alpha1), ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2)"

// errNoSecrets refuses a JWT key set from a Secret: the files source reads
// no Secrets, and a key set is public anyway.
var errNoSecrets = errors.New("the files source reads no Secrets: put the key set inline in jwks")

// minDocsPerWorker is the fewest documents worth another goroutine: a
// document decodes in microseconds.
const minDocsPerWorker = 256

// entry is one decoded object and where it came from.
type entry struct {
	doc int // 0 when restored from saved state
	obj model.Object
}

// document is one raw YAML document of a file.
type document struct {
	index int // 1-based among non-empty documents
	line  int // 1-based line in the file where the document starts
	data  []byte
}

// splitDocuments splits YAML on "---" separator lines, dropping documents that
// hold only blank lines and comments. JSON files are one document.
func splitDocuments(data []byte, isJSON bool) []document {
	var docs []document
	add := func(line int, chunk []byte) {
		if isBlank(chunk) {
			return
		}
		docs = append(docs, document{index: len(docs) + 1, line: line, data: chunk})
	}
	if isJSON {
		add(1, data)
		return docs
	}
	start, startLine := 0, 1
	for off, line := 0, 1; off < len(data); line++ {
		end := len(data)
		if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
			end = off + i + 1
		}
		if isSeparator(data[off:end]) {
			add(startLine, data[start:off])
			start, startLine = end, line+1
		}
		off = end
	}
	add(startLine, data[start:])
	return docs
}

func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(line[3:])
	return len(rest) == 0 || rest[0] == '#'
}

func isBlank(chunk []byte) bool {
	for len(chunk) > 0 {
		l := chunk
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			l, chunk = chunk[:i], chunk[i+1:]
		} else {
			chunk = nil
		}
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// parseFile decodes every document of a file. Any bad document fails the
// whole file: applying half a file could, for example, install a policy
// whose companion allow-rule was in the broken document.
//
// Documents in the common subset of YAML are decoded by the fast decoder,
// the others (and those with errors) by the strict one, which gives the
// same objects (see fastDecoder). A large file is decoded on every CPU.
func parseFile(name string, data []byte, isJSON bool) ([]entry, error) {
	docs := splitDocuments(data, isJSON)
	type result struct {
		obj model.Object
		err error
	}
	results := make([]result, len(docs))
	decodeRange := func(next func() (int, bool)) {
		fast := newFastDecoder()
		for i, ok := next(); ok; i, ok = next() {
			var obj model.Object
			ok := false
			if !isJSON {
				obj, ok = fast.decode(docs[i].data)
			}
			var err error
			if !ok {
				obj, err = decodeDocument(name, docs[i])
			}
			results[i] = result{obj, err}
		}
	}
	if workers := min(runtime.GOMAXPROCS(0), len(docs)/minDocsPerWorker); workers > 1 {
		var (
			wg   sync.WaitGroup
			seq  atomic.Int64
			next = func() (int, bool) {
				i := int(seq.Add(1)) - 1
				return i, i < len(docs)
			}
		)
		for range workers {
			wg.Add(1)
			go func() { defer wg.Done(); decodeRange(next) }()
		}
		wg.Wait()
	} else {
		i := 0
		decodeRange(func() (int, bool) { i++; return i - 1, i <= len(docs) })
	}

	var out []entry
	seen := map[model.Key]int{}
	for i, d := range docs {
		obj, err := results[i].obj, results[i].err
		if err != nil {
			return nil, err
		}
		if obj == nil {
			continue
		}
		k := obj.Key()
		if p, ok := obj.(*model.L7Policy); ok {
			if _, err := k8sconv.ResolveL7Secrets(p, "", func(model.SecretKeyRef) ([]byte, error) { return nil, errNoSecrets }); err != nil {
				return nil, conversionError(name, d.index, k.String(), err)
			}
		}
		if prev, dup := seen[k]; dup {
			return nil, &ManifestError{File: name, Doc: d.index, Object: k.String(),
				Err: fmt.Errorf("%w: also defined in document %d", ErrDuplicate, prev)}
		}
		seen[k] = d.index
		out = append(out, entry{doc: d.index, obj: obj})
	}
	return out, nil
}

// Decode decodes a manifest as the source decodes each file of its
// directory: strictly, every document or none, errors naming name, the
// document, the object and the field. A name ending in .json is read as
// JSON. It is how tools check manifests that are not in the directory
// (`sluice policy trace --what-if`).
func Decode(name string, data []byte) ([]model.Object, error) {
	es, err := parseFile(name, data, strings.EqualFold(filepath.Ext(name), ".json"))
	if err != nil {
		return nil, err
	}
	out := make([]model.Object, len(es))
	for i, e := range es {
		out[i] = e.obj
	}
	return out, nil
}

// decodeDocument returns nil, nil for a document that is YAML null.
func decodeDocument(file string, d document) (model.Object, error) {
	obj, object, err := strictObject(file, d)
	if err != nil || obj == nil {
		return nil, err
	}
	return convert(file, d, object, obj)
}

// convert converts a decoded object to the model; object names it in
// errors.
func convert(file string, d document, object string, obj metav1.Object) (model.Object, error) {
	m, err := k8sconv.Object(obj)
	if err != nil {
		return nil, conversionError(file, d.index, object, err)
	}
	return m, nil
}

// conversionError is a k8sconv error as a ManifestError, with the field it
// names.
func conversionError(file string, doc int, object string, err error) *ManifestError {
	merr := &ManifestError{File: file, Doc: doc, Object: object, Err: err}
	var fe *k8sconv.FieldError
	if errors.As(err, &fe) {
		merr.Field, merr.Err = fe.Field, fe.Err
	}
	return merr
}

// strictObject decodes a document strictly into its Kubernetes type, and
// names the object for errors ("Pod default/web"). It returns a nil object
// for a document that is YAML null.
func strictObject(file string, d document) (metav1.Object, string, error) {
	merr := func(object, field string, err error) error {
		return &ManifestError{File: file, Doc: d.index, Object: object, Field: field, Err: err}
	}
	// The strict YAML conversion rejects duplicate keys, which a plain
	// conversion would silently resolve to the last one.
	j, err := yaml.YAMLToJSONStrict(d.data)
	if err != nil {
		// Report lines relative to the file, not to the document.
		msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(s string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
			return "line " + strconv.Itoa(n+d.line-1)
		})
		return nil, "", merr("", "", fmt.Errorf("invalid YAML: %s", msg))
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return nil, "", nil
	}
	var top map[string]json.RawMessage
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(j, &top); err != nil {
		return nil, "", merr("", "", errors.New("document is not an object"))
	}
	str := func(field string) (string, error) {
		raw, ok := top[field]
		if !ok {
			return "", merr("", field, errors.New("required value"))
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", merr("", field, errors.New("must be a string"))
		}
		if s == "" {
			return "", merr("", field, errors.New("required value"))
		}
		return s, nil
	}
	apiVersion, err := str("apiVersion")
	if err != nil {
		return nil, "", err
	}
	kind, err := str("kind")
	if err != nil {
		return nil, "", err
	}
	info, ok := kinds[kind]
	if !ok {
		return nil, "", merr("", "kind", fmt.Errorf("%w %q (supported: %s)", ErrUnsupportedKind, kind, supportedKinds))
	}

	// Name the object before strict decoding so that even decoding errors
	// say which object they are about; a malformed metadata just leaves the
	// name out, and strict decoding then reports it.
	var meta struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(j, &meta)
	ns := meta.Metadata.Namespace
	if info.namespaced && ns == "" {
		ns = "default" // as kubectl does
	}
	if !info.namespaced {
		// kubectl ignores a namespace on cluster-scoped objects too.
		ns = ""
	}
	object := ""
	if meta.Metadata.Name != "" {
		object = kind + " " + ns + "/" + meta.Metadata.Name
		if ns == "" {
			object = kind + " " + meta.Metadata.Name
		}
	}
	if apiVersion != info.apiVersion {
		return nil, "", merr(object, "apiVersion", fmt.Errorf("%w: apiVersion %q for kind %s (want %s)",
			ErrUnsupportedKind, apiVersion, kind, info.apiVersion))
	}

	obj := info.newObj()
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		field, msg := describeJSONError(err)
		return nil, "", merr(object, field, errors.New(msg))
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = strings.TrimPrefix(e.Error(), "json: ")
		}
		me := &ManifestError{File: file, Doc: d.index, Object: object, Err: errors.New(strings.Join(msgs, "; ")), fieldInErr: true}
		var fe sigsjson.FieldError
		if errors.As(strictErrs[0], &fe) {
			me.Field = fe.FieldPath()
		}
		return nil, "", me
	}
	obj.SetNamespace(ns)
	return obj, object, nil
}

var typeErrRE = regexp.MustCompile(`^json: cannot unmarshal (.+) into Go struct field [^.]*\.(\S+) of type (\S+)$`)

// describeJSONError turns the decoder's Go-flavoured type errors into
// "field: cannot unmarshal string into int32".
func describeJSONError(err error) (field, msg string) {
	if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		return m[2], "cannot unmarshal " + m[1] + " into " + m[3]
	}
	return "", strings.TrimPrefix(err.Error(), "json: ")
}
