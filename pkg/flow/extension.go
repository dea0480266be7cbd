package flow

import (
	"net/netip"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// What a flow knows that Hubble's Flow has no field for goes into
// flow.extensions, which Hubble keeps for "arbitrary additional metadata"
// of Hubble-compatible APIs. It is a google.protobuf.Struct, a well-known
// type every Hubble client can decode and print (-o json):
//
//	{"original_destination": {"ip": "10.96.0.20", "port": 80}}
//
// original_destination is the service frontend a translated connection's
// client addressed, before load balancing chose the backend the flow's
// IP and L4 destination name. Hubble has the service's name
// (destination_service) but not the port the client used.
const extOriginalDestination = "original_destination"

// SetOriginalDestination records in f's extensions the frontend a
// translated flow's client addressed.
func SetOriginalDestination(f *flowpb.Flow, ap netip.AddrPort) {
	if ext := originalDestination(ap); ext != nil {
		f.Extensions = ext
	}
}

// originalDestination is the extensions message naming ap; the converter
// makes one per frontend and its flows share it.
func originalDestination(ap netip.AddrPort) *anypb.Any {
	s, err := structpb.NewStruct(map[string]any{
		extOriginalDestination: map[string]any{"ip": ap.Addr().Unmap().String(), "port": float64(ap.Port())},
	})
	if err != nil {
		return nil // cannot happen: strings and numbers only
	}
	// Deterministic: the same flow is the same bytes (map order).
	ext := &anypb.Any{}
	if err := anypb.MarshalFrom(ext, s, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil
	}
	return ext
}

// OriginalDestination returns the address and port the client of a
// translated flow addressed (the service frontend), when the flow's
// extensions record it: Sluice's flows of service traffic do, other
// emitters' do not.
func OriginalDestination(f *flowpb.Flow) (netip.AddrPort, bool) {
	ext := f.GetExtensions()
	if ext == nil {
		return netip.AddrPort{}, false
	}
	var s structpb.Struct
	if err := ext.UnmarshalTo(&s); err != nil {
		return netip.AddrPort{}, false
	}
	od := s.GetFields()[extOriginalDestination].GetStructValue().GetFields()
	ip, err := netip.ParseAddr(od["ip"].GetStringValue())
	port := od["port"].GetNumberValue()
	if err != nil || port < 0 || port > 65535 || port != float64(uint16(port)) {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, uint16(port)), true
}
