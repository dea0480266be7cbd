package model

import (
	"fmt"
	"net/netip"
	"reflect"
)

// Op is what a Change does.
type Op uint8

// Change operations.
const (
	OpUpsert Op = iota + 1
	OpDelete
)

// String returns "upsert" or "delete".
func (o Op) String() string {
	switch o {
	case OpUpsert:
		return "upsert"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Change is one upsert or delete. For a delete only Object.Key() matters;
// Diff passes the old object so consumers can see what went away.
type Change struct {
	Op     Op
	Object Object
}

// Diff returns the changes that turn old into new: deletes first, then
// upserts, each sorted by key. Deletes come first so that a consumer applying
// them in order never holds two objects claiming the same resource (a pod IP
// reused by a new pod, for example). Objects are compared deeply with Equal,
// so identical objects yield no change. nil states are empty.
func Diff(old, new *State) []Change {
	var dels, ups []Change
	for _, o := range old.Objects() {
		if _, ok := new.Get(o.Key()); !ok {
			dels = append(dels, Change{Op: OpDelete, Object: o})
		}
	}
	for _, n := range new.Objects() {
		if o, ok := old.Get(n.Key()); !ok || !Equal(o, n) {
			ups = append(ups, Change{Op: OpUpsert, Object: n})
		}
	}
	return append(dels, ups...)
}

// Equal reports whether two objects are deeply equal. Unlike
// reflect.DeepEqual it treats nil and empty slices and maps as equal, because
// JSON round trips (saved state) and different sources disagree on them and
// that difference must not look like a change.
func Equal(a, b Object) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a == b {
		return true // the same object: objects are immutable
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	return deepEqual(va, vb)
}

var (
	addrType   = reflect.TypeFor[netip.Addr]()
	prefixType = reflect.TypeFor[netip.Prefix]()
)

func deepEqual(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return deepEqual(a.Elem(), b.Elem())
	case reflect.Struct:
		// netip values hide their fields; they are comparable and canonical
		// (zones are interned), so == is exact.
		if a.Type() == addrType || a.Type() == prefixType {
			return a.Interface() == b.Interface()
		}
		for i := range a.NumField() {
			if !deepEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !deepEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		it := a.MapRange()
		for it.Next() {
			bv := b.MapIndex(it.Key())
			if !bv.IsValid() || !deepEqual(it.Value(), bv) {
				return false
			}
		}
		return true
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return a.Uint() == b.Uint()
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return a.Elem().Type() == b.Elem().Type() && deepEqual(a.Elem(), b.Elem())
	default:
		panic(fmt.Sprintf("model: cannot compare %s", a.Type()))
	}
}
