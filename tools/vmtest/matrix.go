package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/datapath"
)

// Matrix is vagrant/matrix.yaml.
type Matrix struct {
	Apt struct {
		// Sources are "URI suite component" lines of the private sources.list.
		Sources []string `json:"sources"`
	} `json:"apt"`
	// Modules are loaded at boot with their dependencies.
	Modules []string `json:"modules"`
	// Suites name lists of test packages.
	Suites  map[string][]SuitePackage `json:"suites"`
	Kernels []Kernel                  `json:"kernels"`
}

// SuitePackage is one package (or pattern such as ./...) of a suite.
type SuitePackage struct {
	Package string `json:"package"`
	// Run is a -test.run pattern; empty runs every test.
	Run string `json:"run,omitempty"`
	// Args are more arguments of the test binary, the package's own test
	// flags (e.g. tests/e2e's -e2e.netpol-cases to run a subset of
	// TestNetpolConformance's cases, which -test.run cannot select
	// without filtering every other test's subtests too).
	Args []string `json:"args,omitempty"`
}

// Kernel is one entry of the matrix.
type Kernel struct {
	Name        string `json:"name"`
	Arch        string `json:"arch"`
	Description string `json:"description"`
	// Package and Version pin the Debian package; none for "host".
	Package string `json:"package,omitempty"`
	Version string `json:"version,omitempty"`
	// Box is the Vagrant box with this kernel, if one exists.
	Box string `json:"box,omitempty"`
	// CI entries run on every submission (`make test-vm-matrix`).
	CI bool `json:"ci,omitempty"`
	// Suite is the suite this kernel runs when none is asked for, and the
	// largest it can run (arm64: the datapath tests only).
	Suite string `json:"suite,omitempty"`
	// Features maps every probed feature to whether the kernel has it.
	Features map[string]bool `json:"features"`
}

// ID is "name/arch", unique in the matrix.
func (k Kernel) ID() string { return k.Name + "/" + k.Arch }

// Host reports whether this is the machine's own kernel (no VM).
func (k Kernel) Host() bool { return k.Package == "" }

// ExpectedFeatures lists the features the kernel is expected to have.
func (k Kernel) ExpectedFeatures() []string {
	var out []string
	for name, have := range k.Features {
		if have {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func loadMatrix(path string) (*Matrix, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel matrix: %w", err)
	}
	var m Matrix
	if err := yaml.UnmarshalStrict(b, &m); err != nil {
		return nil, fmt.Errorf("parse kernel matrix %s: %w", path, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("kernel matrix %s: %w", path, err)
	}
	return &m, nil
}

func (m *Matrix) validate() error {
	seen := map[string]bool{}
	for _, k := range m.Kernels {
		if k.Name == "" || (k.Arch != "amd64" && k.Arch != "arm64") {
			return fmt.Errorf("kernel %q: needs a name and arch amd64 or arm64", k.ID())
		}
		if seen[k.ID()] {
			return fmt.Errorf("kernel %s is listed twice", k.ID())
		}
		seen[k.ID()] = true
		if (k.Package == "") != (k.Version == "") {
			return fmt.Errorf("kernel %s: package and version go together", k.ID())
		}
		if k.Suite != "" && m.Suites[k.Suite] == nil {
			return fmt.Errorf("kernel %s: unknown suite %q", k.ID(), k.Suite)
		}
		// Every probed feature, and only those: the matrix checks them all.
		for _, f := range datapath.KernelFeatures {
			if _, ok := k.Features[f.Name]; !ok {
				return fmt.Errorf("kernel %s: features lacks %s (%s): say whether the kernel has it", k.ID(), f.Name, f.What)
			}
		}
		for name := range k.Features {
			if _, ok := datapath.LookupKernelFeature(name); !ok {
				return fmt.Errorf("kernel %s: unknown feature %q (known: %s)", k.ID(), name, featureNames())
			}
		}
	}
	return nil
}

func featureNames() string {
	var names []string
	for _, f := range datapath.KernelFeatures {
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

// find returns the entry named name for arch.
func (m *Matrix) find(name, arch string) (Kernel, error) {
	var ids []string
	for _, k := range m.Kernels {
		if k.Name == name && k.Arch == arch {
			return k, nil
		}
		ids = append(ids, k.ID())
	}
	return Kernel{}, fmt.Errorf("no kernel %s/%s in the matrix (it has %s)", name, arch, strings.Join(ids, ", "))
}
