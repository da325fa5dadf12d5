# The Makefile targets are the project's interface: build, generate, test,
# plugin, run, bench.

GO        ?= go
BIN       := bin
PLUGIN    ?= membrane
PLUGIN_TAG ?= latest
XTABLES   ?=

.PHONY: build generate check-generate vet test test-unit fuzz plugin run bench bench-smoke bench-micro clean

# Fuzz targets (package:function), run briefly by `make test` (a count of
# inputs, not a time: a timed run can fail with "context deadline
# exceeded" when its deadline falls mid-run); run them longer by hand with
# e.g. `make fuzz FUZZTIME=10m`.
FUZZTIME ?= 60000x
# Minimizing a new input can outlast a short -fuzztime and fail the run;
# short runs skip it (set e.g. FUZZMINIMIZETIME=60s for long runs by hand).
FUZZMINIMIZETIME ?= 0
FUZZ_TARGETS := ./state:FuzzDecodeCheckpoint ./state:FuzzDecodeJournalRecord ./policy:FuzzParse \
	./plugin:FuzzIPAMRequests ./plugin:FuzzNetworkDriverDecoding ./datapath:FuzzFromContainer

# Two static binaries: bin/membrane (the CLI; `membrane daemon` runs the
# daemon beside it) and bin/membraned (the daemon).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/membrane ./cmd/membraned

# Rebuild the committed bpf2go output (datapath/*_bpfel.{go,o}) from bpf/
# with the clang pinned in datapath/gen.go (Debian clang-16).
generate:
	cd datapath && $(GO) generate ./...

# Fails when the committed bpf2go output does not match bpf/.
check-generate: generate
	@git diff --exit-code -- datapath/ || { echo "datapath: committed BPF objects are stale: run 'make generate' and commit"; exit 1; }

vet:
	$(GO) vet ./...

# The whole test suite: generated code up to date, vet, unit tests, BPF
# program tests, namespace tests, the integration suite against a real
# dockerd (needs root; unprivileged runs skip what needs it, saying why),
# then a short run of every fuzz target.
test: check-generate vet
	$(GO) test -count=1 -timeout 40m ./...
	$(MAKE) fuzz
	$(MAKE) bench-smoke

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
	done

# Everything but the integration suite.
test-unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

# The managed plugin: rootfs (membraned, iptables, ip6tables) in build/plugin,
# created in Docker as $(PLUGIN):$(PLUGIN_TAG). PLUGIN may name a registry
# (make plugin PLUGIN=registry.example/membrane PLUGIN_TAG=v1, then docker
# plugin push); XTABLES=nft|legacy picks the iptables backend (default: this
# host's).
plugin: build
	XTABLES=$(XTABLES) ./hack/make-plugin.sh $(PLUGIN):$(PLUGIN_TAG)

# Run membrane for real: Docker engine (started if none runs), the plugin,
# and a demo network.
run: build
	./hack/run.sh

# The benchmark (as root, about 35 minutes here): membrane against a raw veth pair,
# Docker's bridge and iptables, on this machine, in interleaved rounds.
# Writes bench/results/<time>.json, docs/benchmarks.md and docs/bench/*.svg.
bench:
	$(GO) run ./cmd/membrane-bench -mode full -docs

# One short round of every benchmark measurement with small N, under two
# minutes; fails if any measurement fails. `make test` runs it so that the
# harness cannot rot.
bench-smoke:
	$(GO) run ./cmd/membrane-bench -mode smoke

# The Go microbenchmarks (go test -bench).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin build
