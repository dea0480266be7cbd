package service

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/model"
)

// DefaultMaglevTableSize is the default number of entries per Maglev table
// (65,524 bytes per table). Maglev's disruption bound wants it well above
// 100 × the largest backend count.
const DefaultMaglevTableSize = 16381

// MaglevTableSizes are the allowed Maglev table sizes: primes (the
// population needs a prime size to walk every slot), roughly doubling, as
// Cilium offers.
var MaglevTableSizes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// Options configure Compute.
type Options struct {
	// NodeName is this node; endpoints whose NodeName equals it are local.
	NodeName string
	// NodeAddrs are this node's addresses that serve NodePorts, of both
	// families.
	NodeAddrs []netip.Addr
	// DefaultAlgorithm applies to services without AlgorithmAnnotation.
	DefaultAlgorithm Algorithm
	// MaglevTableSize is the number of entries per Maglev table; one of
	// MaglevTableSizes.
	MaglevTableSize uint32
	// MaglevSeed is mixed into the Maglev hashes. It must be the same on
	// every node (cluster-wide configuration), or nodes disagree on tables.
	MaglevSeed string
	// Extras returns the service fields the model does not carry yet; nil
	// means none.
	Extras func(model.NamespacedName) ServiceExtras
	// IDs assigns stable frontend and backend IDs and is updated by
	// Compute. Nil uses a fresh allocator, so IDs are only stable within
	// the result.
	IDs *Allocator
}

// Defaults fills zero fields with their defaults.
func (o *Options) Defaults() {
	if o.DefaultAlgorithm == "" {
		o.DefaultAlgorithm = AlgorithmRandom
	}
	if o.MaglevTableSize == 0 {
		o.MaglevTableSize = DefaultMaglevTableSize
	}
}

// Validate reports every invalid field, naming the allowed values.
func (o *Options) Validate() error {
	var errs []error
	if _, err := ParseAlgorithm(string(o.DefaultAlgorithm)); err != nil {
		errs = append(errs, fmt.Errorf("default algorithm: %w", err))
	}
	if err := ValidateMaglevTableSize(o.MaglevTableSize); err != nil {
		errs = append(errs, err)
	}
	for _, a := range o.NodeAddrs {
		if !a.IsValid() || a.IsUnspecified() {
			errs = append(errs, fmt.Errorf("node address %q is not a usable unicast address", a))
		}
	}
	return errors.Join(errs...)
}

// ParseAlgorithm parses an algorithm name as used in AlgorithmAnnotation
// and configuration.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case AlgorithmRandom, AlgorithmMaglev:
		return a, nil
	}
	return "", fmt.Errorf("unknown load-balancing algorithm %q (want %q or %q)", s, AlgorithmRandom, AlgorithmMaglev)
}

// ValidateMaglevTableSize checks that m is one of MaglevTableSizes.
func ValidateMaglevTableSize(m uint32) error {
	if slices.Contains(MaglevTableSizes, m) {
		return nil
	}
	return fmt.Errorf("maglev table size %d is not allowed (want one of %v)", m, MaglevTableSizes)
}
