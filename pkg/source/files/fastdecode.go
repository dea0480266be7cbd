package files

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// fastDecoder decodes documents written in the YAML subset (see
// yamlsubset.go) straight into the Kubernetes API types, as the strict
// decoder would decode their JSON: fields matched by their exact JSON
// names, unknown fields refused, types checked, json.Unmarshaler types
// given their JSON, empty collections non-nil and null handled as
// encoding/json does. It reports false for any document it is not sure
// of, the strict decoder's to decode or reject (decodeDocument); so a
// document decodes to the same object either way, and a bad document
// gets the same error. TestFastDecoderMatchesStrict holds it to that.
//
// The strict decoder converts each document to generic YAML values, then
// to JSON, then decodes the JSON twice; this does one pass over a tree
// that reuses its memory from document to document: about ten times
// faster with a tenth of the garbage. A fastDecoder is not safe for
// concurrent use.
type fastDecoder struct {
	p      yparser
	intern map[string]string
	json   []byte // scratch for json.Unmarshaler values
}

// maxInterned bounds the strings a fastDecoder interns: the first ones
// seen in a file are the ones that repeat (namespaces, protocols, port
// names, label keys and values), and unique ones (names, addresses) would
// only grow the table.
const maxInterned = 4096

func newFastDecoder() *fastDecoder {
	return &fastDecoder{intern: make(map[string]string)}
}

// decode returns the model object of one document, or false.
func (d *fastDecoder) decode(data []byte) (model.Object, bool) {
	obj, ok := d.object(data)
	if !ok {
		return nil, false
	}
	m, err := k8sconv.Object(obj)
	if err != nil {
		return nil, false
	}
	return m, true
}

// object decodes one document into its Kubernetes type, with the
// namespace set as strictObject sets it, or returns false.
func (d *fastDecoder) object(data []byte) (metav1.Object, bool) {
	root, ok := d.p.parse(data)
	if !ok || d.p.nodes[root].kind != yMap {
		return nil, false
	}
	kind, _ := d.topString(root, "kind")
	apiVersion, _ := d.topString(root, "apiVersion")
	info, ok := kinds[kind]
	if !ok || apiVersion != info.apiVersion {
		return nil, false
	}
	obj := info.newObj()
	if !d.value(root, reflect.ValueOf(obj).Elem()) {
		return nil, false
	}
	ns := obj.GetNamespace()
	if info.namespaced && ns == "" {
		ns = "default"
	}
	if !info.namespaced {
		ns = ""
	}
	obj.SetNamespace(ns)
	return obj, true
}

// topString is the string value of key in mapping m.
func (d *fastDecoder) topString(m int32, key string) (string, bool) {
	nodes := d.p.nodes
	for k := nodes[m].first; k >= 0; k = nodes[nodes[k].next].next {
		if d.p.text(k) == key {
			return d.scalarString(nodes[k].next)
		}
	}
	return "", false
}

// scalarString is the string a scalar node holds, if it is a string in
// JSON: quoted, or plain and resolved as a string. It is not interned.
func (d *fastDecoder) scalarString(n int32) (string, bool) {
	nd := &d.p.nodes[n]
	switch nd.kind {
	case yQuoted:
		return d.p.text(n), true
	case yPlain:
		s := d.p.text(n)
		return s, plainClass(s) == plainString
	}
	return "", false
}

// str returns a string to keep: interned when short and common.
func (d *fastDecoder) str(s string) string {
	if len(s) > 64 {
		return strings.Clone(s)
	}
	if v, ok := d.intern[s]; ok {
		return v
	}
	c := strings.Clone(s)
	if len(d.intern) < maxInterned {
		d.intern[c] = c
	}
	return c
}

// isNull reports whether node n is null in JSON.
func (d *fastDecoder) isNull(n int32) bool {
	nd := &d.p.nodes[n]
	return nd.kind == yNull || nd.kind == yPlain && plainClass(d.p.text(n)) == plainNull
}

var (
	stringMapType   = reflect.TypeFor[map[string]string]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// value decodes node n into v, which is settable.
func (d *fastDecoder) value(n int32, v reflect.Value) bool {
	t := v.Type()
	ti := typeInfoOf(t)
	if d.isNull(n) {
		switch t.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
			v.SetZero()
			return true
		}
		if ti.unmarshaler {
			return d.unmarshal(n, v)
		}
		// encoding/json leaves other values as they are on null.
		return !ti.unsupported
	}
	if t.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		return d.value(n, v.Elem())
	}
	if ti.unsupported {
		return false
	}
	if ti.unmarshaler {
		return d.unmarshal(n, v)
	}
	nd := &d.p.nodes[n]
	switch t.Kind() {
	case reflect.Struct:
		if nd.kind != yMap {
			return false
		}
		nodes := d.p.nodes
		for k := nd.first; k >= 0; k = nodes[nodes[k].next].next {
			name, ok := d.scalarString(k)
			if !ok {
				return false
			}
			idx, ok := ti.fields[name]
			if !ok {
				return false // unknown field: the strict decoder says which
			}
			if !d.value(nodes[k].next, v.FieldByIndex(idx)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if nd.kind != yMap {
			return false
		}
		return d.mapValue(nd, v)
	case reflect.Slice:
		if nd.kind != ySeq {
			return false
		}
		s := reflect.MakeSlice(t, int(nd.n), int(nd.n))
		i := 0
		for c := nd.first; c >= 0; c = d.p.nodes[c].next {
			if !d.value(c, s.Index(i)) {
				return false
			}
			i++
		}
		v.Set(s)
		return true
	case reflect.String:
		s, ok := d.scalarString(n)
		if !ok {
			return false
		}
		v.SetString(d.str(s))
		return true
	case reflect.Bool:
		if nd.kind != yPlain {
			return false
		}
		switch plainClass(d.p.text(n)) {
		case plainTrue:
			v.SetBool(true)
			return true
		case plainFalse:
			v.SetBool(false)
			return true
		}
		return false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		s, ok := d.intText(n)
		return ok && setNumber(v, s)
	}
	return false
}

// setNumber sets numeric v to the decimal integer s, if it fits.
func setNumber(v reflect.Value, s string) bool {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || v.OverflowFloat(f) {
			return false
		}
		v.SetFloat(f)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v.OverflowUint(u) {
			return false
		}
		v.SetUint(u)
	default:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v.OverflowInt(i) {
			return false
		}
		v.SetInt(i)
	}
	return true
}

// intText is the text of a plain scalar that is a decimal integer.
func (d *fastDecoder) intText(n int32) (string, bool) {
	if d.p.nodes[n].kind != yPlain {
		return "", false
	}
	s := d.p.text(n)
	return s, plainClass(s) == plainInt
}

// mapValue decodes mapping nd into map v, made if nil, as encoding/json
// does: a JSON object always gives a non-nil map.
func (d *fastDecoder) mapValue(nd *ynode, v reflect.Value) bool {
	t := v.Type()
	if t.Key().Kind() != reflect.String || reflect.PointerTo(t.Key()).Implements(textType) {
		return false
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, int(nd.n/2)))
	}
	// Labels, annotations and selectors without reflection.
	strMap, _ := v.Interface().(map[string]string)
	nodes := d.p.nodes
	for k := nd.first; k >= 0; k = nodes[nodes[k].next].next {
		key, ok := d.scalarString(k)
		if !ok {
			return false
		}
		val := nodes[k].next
		if d.isNull(val) {
			return false // a null element: encoding/json's business
		}
		if strMap != nil && t == stringMapType {
			s, ok := d.scalarString(val)
			if !ok {
				return false
			}
			strMap[d.str(key)] = d.str(s)
			continue
		}
		e := reflect.New(t.Elem()).Elem()
		if !d.value(val, e) {
			return false
		}
		v.SetMapIndex(reflect.ValueOf(d.str(key)).Convert(t.Key()), e)
	}
	return true
}

// unmarshal gives node n, as JSON, to v's json.Unmarshaler.
func (d *fastDecoder) unmarshal(n int32, v reflect.Value) bool {
	if !v.CanAddr() {
		return false
	}
	u, ok := v.Addr().Interface().(json.Unmarshaler)
	if !ok {
		return false
	}
	b, ok := d.appendJSON(d.json[:0], n)
	d.json = b
	return ok && u.UnmarshalJSON(b) == nil
}

// appendJSON appends node n as JSON.
func (d *fastDecoder) appendJSON(b []byte, n int32) ([]byte, bool) {
	nd := &d.p.nodes[n]
	switch nd.kind {
	case yNull:
		return append(b, "null"...), true
	case yQuoted:
		// Quoted scalars are printable ASCII, for which Go's quoting is
		// JSON's.
		return strconv.AppendQuote(b, d.p.text(n)), true
	case yPlain:
		s := d.p.text(n)
		switch plainClass(s) {
		case plainString:
			return strconv.AppendQuote(b, s), true
		case plainInt:
			return append(b, s...), true
		case plainTrue:
			return append(b, "true"...), true
		case plainFalse:
			return append(b, "false"...), true
		case plainNull:
			return append(b, "null"...), true
		}
		return b, false
	case yMap:
		b = append(b, '{')
		nodes := d.p.nodes
		for k := nd.first; k >= 0; k = nodes[nodes[k].next].next {
			key, ok := d.scalarString(k)
			if !ok {
				return b, false
			}
			if k != nd.first {
				b = append(b, ',')
			}
			b = strconv.AppendQuote(b, key)
			b = append(b, ':')
			if b, ok = d.appendJSON(b, nodes[k].next); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	case ySeq:
		b = append(b, '[')
		for c := nd.first; c >= 0; c = d.p.nodes[c].next {
			if c != nd.first {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = d.appendJSON(b, c); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	}
	return b, false
}

// typeInfo is what the fast decoder needs to know of a type.
type typeInfo struct {
	// unmarshaler: *T implements json.Unmarshaler, which then decodes it.
	unmarshaler bool
	// unsupported: decoding T is left to the strict decoder (interfaces,
	// arrays, byte slices, TextUnmarshalers, ",string" fields, embedded
	// pointers or clashing field names).
	unsupported bool
	// fields of a struct, by JSON name, as field index paths.
	fields map[string][]int
}

var typeInfos sync.Map // reflect.Type → *typeInfo

func typeInfoOf(t reflect.Type) *typeInfo {
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(*typeInfo)
	}
	ti := &typeInfo{}
	pt := reflect.PointerTo(t)
	switch {
	case t.Kind() == reflect.Pointer:
	case pt.Implements(unmarshalerType):
		ti.unmarshaler = true
	case pt.Implements(textType):
		ti.unsupported = true
	default:
		switch t.Kind() {
		case reflect.Struct:
			ti.fields, ti.unsupported = structFields(t)
		case reflect.Interface, reflect.Array, reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
			ti.unsupported = true
		case reflect.Slice:
			ti.unsupported = t.Elem().Kind() == reflect.Uint8 // base64 in JSON
		}
	}
	actual, _ := typeInfos.LoadOrStore(t, ti)
	return actual.(*typeInfo)
}

// structFields maps the JSON names of t's fields to their index paths,
// with encoding/json's rules for the cases Kubernetes types use: a tag
// name or the Go name, "-" skipped, unexported fields skipped, and the
// fields of an embedded struct without a tag name promoted. Anything
// subtler (",string", embedded pointers, two fields of one name, which
// encoding/json resolves by depth) makes the type unsupported.
func structFields(t reflect.Type) (map[string][]int, bool) {
	fields := map[string][]int{}
	var walk func(t reflect.Type, index []int) bool
	walk = func(t reflect.Type, index []int) bool {
		for i := range t.NumField() {
			sf := t.Field(i)
			if sf.Anonymous {
				if sf.Type.Kind() == reflect.Pointer {
					return false
				}
				if !sf.IsExported() && sf.Type.Kind() != reflect.Struct {
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			for _, o := range strings.Split(opts, ",") {
				if o == "string" {
					return false
				}
			}
			idx := append(append([]int(nil), index...), i)
			if name == "" && sf.Anonymous && sf.Type.Kind() == reflect.Struct {
				if !walk(sf.Type, idx) {
					return false
				}
				continue
			}
			if name == "" {
				name = sf.Name
			}
			if _, dup := fields[name]; dup {
				return false
			}
			fields[name] = idx
		}
		return true
	}
	if !walk(t, nil) {
		return nil, true
	}
	return fields, false
}

// unsafeString is b as a string without a copy, for lookups and
// comparisons: it must not outlive b or be kept (str copies).
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
