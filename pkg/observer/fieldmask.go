package observer

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// fieldMask selects the flow fields a client asked for: `hubble observe`
// asks only for what its text output prints. A nil mask keeps everything.
type fieldMask map[protoreflect.Name]fieldMask

func newFieldMask(fm *fieldmaskpb.FieldMask) (fieldMask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	if !fm.IsValid(&flowpb.Flow{}) {
		return nil, fmt.Errorf("invalid field mask %q: not fields of flow.Flow", fm.GetPaths())
	}
	root := fieldMask{}
	for _, p := range fm.GetPaths() {
		n := root
		parts := strings.Split(p, ".")
		for i, part := range parts {
			name := protoreflect.Name(part)
			child, seen := n[name]
			if seen && child == nil {
				break // the whole field is already selected
			}
			if i == len(parts)-1 {
				n[name] = nil // all of it
				break
			}
			if child == nil {
				child = fieldMask{}
				n[name] = child
			}
			n = child
		}
	}
	return root, nil
}

// apply returns a flow with only the masked fields of f. Selected
// sub-messages are shared with f, which must not be modified.
func (m fieldMask) apply(f *flowpb.Flow) *flowpb.Flow {
	if m == nil {
		return f
	}
	out := &flowpb.Flow{}
	m.copy(out.ProtoReflect(), f.ProtoReflect())
	return out
}

func (m fieldMask) copy(dst, src protoreflect.Message) {
	fields := src.Descriptor().Fields()
	for name, child := range m {
		fd := fields.ByName(name)
		if fd == nil || !src.Has(fd) {
			continue
		}
		if child == nil || fd.Message() == nil || fd.IsList() || fd.IsMap() {
			dst.Set(fd, src.Get(fd))
			continue
		}
		child.copy(dst.Mutable(fd).Message(), src.Get(fd).Message())
	}
}
