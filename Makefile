# Sluice. `make help` lists the targets.

GO          ?= go
CLANG       ?= clang-19
MULTIARCH   := $(shell gcc -print-multiarch)
BIN         := bin
# grpcnotrace leaves gRPC's golang.org/x/net/trace out: its html/template
# makes the linker keep every exported method of every type (it cannot
# tell which ones reflection will call), which nearly doubles the agent
# (94 → 53 MB) and adds some 15 MiB to its RSS. Nothing uses gRPC tracing.
GOTAGS      ?= grpcnotrace
export DEB_HOST_MULTIARCH := $(MULTIARCH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: generate
generate: ## Compile bpf/ with clang-19 and regenerate the bpf2go Go bindings
	$(GO) generate ./pkg/datapath/...

.PHONY: build
build: ## Build sluice-agent, sluice and sluice-cni into bin/
	$(GO) build -tags '$(GOTAGS)' -o $(BIN)/ ./cmd/sluice-agent ./cmd/sluice ./cmd/sluice-cni

.PHONY: build-edge
build-edge: ## Build the edge agent into bin/edge/ (-tags sluice_edge): the files source only, no Kubernetes source or xDS server; about 10 MB smaller and 8 MiB less RSS
	$(GO) build -tags '$(GOTAGS) sluice_edge' -o $(BIN)/edge/ ./cmd/sluice-agent ./cmd/sluice ./cmd/sluice-cni

.PHONY: build-arm64
build-arm64: ## Cross-build everything for arm64 (the same BPF objects serve both)
	GOARCH=arm64 $(GO) build -tags '$(GOTAGS)' ./...

.PHONY: verify
verify: ## Fail if generated files are stale or gofmt/vet complain
	@$(MAKE) --no-print-directory generate
	@git diff --exit-code --stat -- pkg/datapath/bpfobj || { echo "bpf2go output is stale: run 'make generate' and commit the result"; exit 1; }
	@test -z "$$(git status --porcelain -- pkg/datapath/bpfobj)" || { echo "untracked bpf2go output: run 'make generate' and commit"; exit 1; }
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags sluice_edge ./pkg/agent/... ./cmd/...

.PHONY: test
test: build ## Run all tests, including privileged datapath and end-to-end tests (root)
	SLUICE_BIN_DIR=$(CURDIR)/$(BIN) SLUICE_HUBBLE=$(wildcard $(HUBBLE_DIR)/hubble) $(GO) test -count=1 -p 1 -timeout 30m ./...
	$(GO) test -count=1 -tags sluice_edge ./pkg/agent/

# The official hubble CLI, which tests run against the observer (they skip
# without it): cilium's hubble command at the version go.mod requires,
# built in a throwaway module (cilium's own go.mod has a replace directive,
# which `go install pkg@version` refuses) into $SLUICE_CACHE/hubble/<version>.
CILIUM_VERSION := $(shell awk '$$1 == "github.com/cilium/cilium" {print $$2}' go.mod)
HUBBLE_DIR     := $(or $(SLUICE_CACHE),/var/cache/sluice)/hubble/$(CILIUM_VERSION)

.PHONY: hubble-bin
hubble-bin: ## Build the hubble CLI of go.mod's cilium version into the cache (SLUICE_CACHE; ~6 min cold on 2 cores) and print its path; `make test` runs it against the observer
	@test -x $(HUBBLE_DIR)/hubble || { set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; mkdir -p $(HUBBLE_DIR); \
		printf 'module hubblebuild\n\ngo 1.26.0\n\nrequire github.com/cilium/cilium $(CILIUM_VERSION)\n' > "$$work/go.mod"; \
		cd "$$work" && nice -n 10 $(GO) build -mod=mod -tags '$(GOTAGS)' -o "$$work/hubble" github.com/cilium/cilium/hubble; \
		mv "$$work/hubble" $(HUBBLE_DIR)/hubble; }
	@echo $(HUBBLE_DIR)/hubble

# Fuzz targets (Go native fuzzing): each runs for FUZZTIME; CI runs them
# for seconds, `make fuzz FUZZTIME=10m` for longer. A failing input is
# written under the package's testdata/fuzz: commit it as a regression case
# (`go test` runs the committed inputs as seeds). An input that finds new
# coverage is minimized for at most 50 runs: the datapath and CLI targets
# take milliseconds per run, and the default (a minute each) would leave
# a short run minimizing instead of fuzzing.
FUZZTIME ?= 30s
FUZZ_TARGETS := ./pkg/datapath:FuzzPrograms ./pkg/source/files:FuzzFastDecoder \
	./pkg/cli:FuzzFlowPrinters ./pkg/cli:FuzzBPFList

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each: packets through the programs, manifests, observe's flow printers, the bpf commands' map decoding (root: two targets load programs)
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "--- fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=50x $$pkg || exit 1; \
	done

# Envoy cannot be installed on the development and CI machines, so this
# target has never run on them: it is for whoever has an envoy binary (any
# official build; the DaemonSet's image has one at /usr/local/bin/envoy).
# It validates pkg/xds's golden resources with Envoy itself, then runs the
# L7 end-to-end tests (tests/e2e TestL7*) with SLUICE_ENVOY set: node1's
# proxy is then that Envoy, started from the DaemonSet's bootstrap and
# command line, instead of the test proxy CI runs them with. An ENVOY given
# on the command line or in the environment must exist: only the default's
# absence skips.
ENVOY ?= envoy

.PHONY: test-envoy
test-envoy: ## With an envoy binary (ENVOY=...): envoy --mode validate on pkg/xds's golden resources, then the L7 end-to-end tests with that Envoy as the node's proxy (root); skipped, saying so, without one
	@envoy="$$(command -v $(ENVOY))" || { \
		if [ "$(origin ENVOY)" != file ]; then echo "test-envoy: ENVOY=$(ENVOY): no such program"; exit 1; fi; \
		echo "test-envoy: SKIPPED: no '$(ENVOY)' on PATH; set ENVOY=/path/to/envoy (see pkg/xds/testdata/README.md)"; exit 0; }; \
	$(GO) test -count=1 -run '^TestGolden$$' ./pkg/xds/ || exit 1; \
	for f in pkg/xds/testdata/*.envoy.json; do \
		echo "--- $$envoy --mode validate -c $$f"; \
		"$$envoy" --mode validate -c "$$f" --log-level warn || { echo "test-envoy: Envoy refused $$f"; exit 1; }; \
	done; \
	[ "$$(id -u)" = 0 ] || { echo "test-envoy: the L7 end-to-end tests need root (they would only skip)"; exit 1; }; \
	$(MAKE) --no-print-directory build && \
	SLUICE_ENVOY="$$envoy" SLUICE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -p 1 -v -run '^TestL7' ./tests/e2e/

.PHONY: test-unit
test-unit: ## Run the tests that need no root
	$(GO) test -count=1 ./pkg/model/... ./pkg/source/files/... ./pkg/source/k8sconv/... ./pkg/cgroups/...

# kube-apiserver and etcd for the real API server's tests are built by
# tools/apiserver into $SLUICE_CACHE/apiserver/<version>, outside the repo
# (default /var/cache/sluice).
.PHONY: apiserver-bins
apiserver-bins: ## Build kube-apiserver and etcd from the Go module proxy into the cache outside the repo (SLUICE_CACHE, default /var/cache/sluice; ~5-8 min cold on 2 cores, instant once there)
	$(GO) run ./tools/apiserver >/dev/null

.PHONY: test-apiserver
test-apiserver: build apiserver-bins ## Integration tests against a real kube-apiserver + etcd on loopback: objects through the API to the BPF maps, validation, field selectors, watch resumption, the DaemonSet's RBAC (root)
	SLUICE_APISERVER_REQUIRED=1 SLUICE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -v ./tests/apiserver/ $(TEST_APISERVER_FLAGS)

.PHONY: bench-apiserver
bench-apiserver: build apiserver-bins ## Real API server figures: EndpointSlice change → BPF map latency (200 changes) and a real agent's RSS with 10k pods / 5k services (root)
	SLUICE_APISERVER_REQUIRED=1 SLUICE_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 30m -run 'TestSliceToMapLatency|TestAgentRSS' \
		./tests/apiserver/ -args -apiserver.changes=200 -apiserver.rss-pods=10000 $(BENCH_APISERVER_FLAGS)

# The one-node cluster of tests/cluster: kubelet, kube-controller-manager,
# kube-scheduler, kubectl and kube-proxy built by tools/apiserver -cluster
# into $SLUICE_CACHE/cluster/<version>, beside the API server's binaries;
# containerd, runc and the CNI plugins from Debian.
.PHONY: cluster-bins
cluster-bins: ## Build the API server's and the node's Kubernetes binaries into the cache (cold: ~6 min after the API server's ~13, on a busy 2-core machine, at nice 19; instant once there)
	$(GO) run ./tools/apiserver -cluster >/dev/null

.PHONY: test-cluster
test-cluster: cluster-bins ## The DaemonSet on a real one-node cluster (containerd, kubelet; with and without kube-proxy) in a network namespace (root; apt-get install containerd runc containernetworking-plugins busybox-static iptables)
	SLUICE_CLUSTER_TESTS=1 $(GO) test -count=1 -v -timeout 30m ./tests/cluster/ $(TEST_CLUSTER_FLAGS)

.PHONY: cluster-up
cluster-up: cluster-bins ## Start the one-node cluster with this checkout's images, print how to reach it, keep it until Ctrl-C (root)
	$(GO) run ./tools/cluster $(CLUSTER_FLAGS)

# The VM kernel matrix: vagrant/matrix.yaml lists the kernels (Debian
# packages, fetched and unpacked under $${SLUICE_CACHE:-/var/cache/sluice}/vm,
# never installed) and what each offers; tools/vmtest boots them in qemu.
KERNEL ?=
ARCH   ?= amd64
SUITE  ?=
VMTEST := $(GO) run ./tools/vmtest

.PHONY: test-vm
test-vm: ## Run the privileged tests in a qemu VM with a matrix kernel: KERNEL=5.10|6.1|6.12 [ARCH=arm64] [SUITE=datapath|smoke|full] (root)
	@test -n "$(KERNEL)" || { echo "make test-vm: set KERNEL to a kernel of vagrant/matrix.yaml:"; $(VMTEST) list; exit 2; }
	$(VMTEST) run --kernel $(KERNEL) --arch $(ARCH) $(if $(SUITE),--suite $(SUITE))

.PHONY: test-vm-matrix
test-vm-matrix: ## CI's kernels (5.10, 6.1 amd64) in VMs: datapath unit tests + end-to-end smoke subset (root)
	$(VMTEST) matrix --ci --suite smoke --jobs 2

.PHONY: test-vm-full
test-vm-full: ## Every kernel of the matrix in a VM with the full suite (arm64: the datapath tests) (root)
	$(VMTEST) matrix --suite full

.PHONY: demo
demo: build ## Two simulated nodes, pods, traffic, connections and drops, network, cluster-wide and L7 policy (root)
	$(GO) run ./tools/demo --bin-dir $(CURDIR)/$(BIN)

.PHONY: bench
bench: ## BPF_PROG_TEST_RUN ns/op (IPv4 and IPv6) and every program's verifier instruction count against the 1M limit
	$(GO) test -run '^$$' -bench . -benchtime 200000x ./pkg/datapath/

.PHONY: bench-lb
bench-lb: build ## Service LB vs kube-proxy iptables/nftables, IPv4 and IPv6: conn/s, req/s, test-run ns/pkt, verifier counts, cold programming (root; needs iptables, nftables)
	$(GO) build -o $(BIN)/benchlb ./tools/benchlb
	$(BIN)/benchlb --bin-dir $(CURDIR)/$(BIN) --repo $(CURDIR) $(BENCHLB_FLAGS)

.PHONY: bench-lb-rss
bench-lb-rss: build ## RSS, Go heap, BPF map memory and start-to-programmed time of a real sluice-agent with 10k services × 10 endpoints from manifests (root)
	$(GO) build -o $(BIN)/benchlb ./tools/benchlb
	$(BIN)/benchlb rss --rounds 3 --bin-dir $(CURDIR)/$(BIN) $(BENCHLB_RSS_FLAGS)

.PHONY: bench-edge-rss
bench-edge-rss: build build-edge ## RSS of a real sluice-agent on an edge host, the default and the edge build: 50 real pods, 100 services, 4 policies from manifests, default map sizes (root)
	$(GO) build -o $(BIN)/benchlb ./tools/benchlb
	@echo "== the default build ($(BIN)/sluice-agent)"
	$(BIN)/benchlb rss --edge --rounds 3 --bin-dir $(CURDIR)/$(BIN) $(BENCHLB_RSS_FLAGS)
	@echo "== the edge build ($(BIN)/edge/sluice-agent, make build-edge)"
	$(BIN)/benchlb rss --edge --rounds 3 --bin-dir $(CURDIR)/$(BIN)/edge $(BENCHLB_RSS_FLAGS)

.PHONY: bench-l7
bench-l7: build ## L7 proxy cost per HTTP request: req/s, p50/p99 and conn/s through the test proxy (SluiceL7Policy GET /api/*) vs direct (root)
	$(GO) build -o $(BIN)/benchlb ./tools/benchlb
	$(BIN)/benchlb l7 --bin-dir $(CURDIR)/$(BIN) $(BENCHL7_FLAGS)

.PHONY: bench-policy
bench-policy: ## Network policy, IPv4 and IPv6: test-run ns/pkt at 10/1k/10k entries, conn/s with 10k rules vs iptables-legacy/-nft and an nftables set (root; needs iptables, nftables)
	$(GO) build -o $(BIN)/benchpolicy ./tools/benchpolicy
	$(BIN)/benchpolicy --repo $(CURDIR) $(BENCHPOLICY_FLAGS)

.PHONY: bench-flows
bench-flows: build ## Flow telemetry of a real agent: events/s kernel → flow store → `sluice observe --follow` at rising rates, zero-loss rate, CPU per 10k events/s, memory per 1,000 flows (root)
	$(GO) build -o $(BIN)/benchflows ./tools/benchflows
	$(BIN)/benchflows --bin-dir $(CURDIR)/$(BIN) $(BENCHFLOWS_FLAGS)

# The image the DaemonSet runs (daemonset/kustomization.yaml names it).
IMAGE           ?= ghcr.io/sluice-net/sluice
IMAGE_TAG       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: image
image: ## Build the linux/amd64+arm64 image with docker buildx (IMAGE=, IMAGE_TAG=; PUSH=1 pushes it, else it stays in the build cache)
	@command -v docker >/dev/null 2>&1 || { echo "make image: no docker CLI in PATH; it needs docker with the buildx plugin and a reachable engine (or build daemonset/Dockerfile with any BuildKit-based builder)"; exit 1; }
	@docker buildx version >/dev/null 2>&1 || { echo "make image: docker has no buildx plugin; install docker-buildx"; exit 1; }
	@docker buildx inspect --bootstrap >/dev/null 2>&1 || { echo "make image: no container engine or BuildKit builder reachable (docker buildx inspect --bootstrap fails): start one, or point DOCKER_HOST or the buildx builder at one"; exit 1; }
	docker buildx build --platform $(IMAGE_PLATFORMS) -f daemonset/Dockerfile \
		--build-arg VERSION=$(IMAGE_TAG) -t $(IMAGE):$(IMAGE_TAG) $(if $(PUSH),--push) .

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
