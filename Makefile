# overlaylab: build, run the lab, test.
GO      ?= go
BIN     := bin/overlaylab
E2E_TIMEOUT ?= 40m

FUZZTIME ?= 20s

# Upstream agents and CNI plugins the suite runs (docs/THIRD_PARTY.md): built
# from their Go modules by hack/build-*.sh, never committed (bin/ is ignored).
FLANNEL_VERSION     ?= v0.28.10
CNI_FLANNEL_VERSION ?= v0.9.1
CNI_PLUGINS_VERSION ?= v1.9.1
FLANNELD            := bin/flanneld
CNI_DIR             := bin/cni
CNI_PLUGINS         := $(addprefix $(CNI_DIR)/,flannel bridge host-local loopback)
# Pin files: empty files whose names carry the versions. A binary is rebuilt
# when it is missing, older than its pin (the version changed, so a new pin
# was made) or older than its build script; otherwise make leaves it alone.
# The recipes touch what they built: go build leaves a binary that is already
# up to date untouched, which would leave it older than a new pin.
PIN_DIR             := bin/.pin
FLANNELD_PIN        := $(PIN_DIR)/flanneld-$(FLANNEL_VERSION)
CNI_PIN             := $(PIN_DIR)/cni-$(CNI_FLANNEL_VERSION)-$(CNI_PLUGINS_VERSION)

.PHONY: build lab-up lab-down test unit e2e bench bench-scale fuzz soak vet clean flanneld cni-plugins

build:
	$(GO) build -o $(BIN) ./cmd/overlaylab

# Needs root: builds the default 3-host udp lab, verifies it, prints a summary.
lab-up: build
	./$(BIN) up

lab-down: build
	./$(BIN) down

vet:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt -w these:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Unit tests (no root needed), then the end-to-end suite (skips without root;
# builds upstream flanneld and the CNI plugins first, once: the suite runs
# them). Every spec's name and outcome shows as it runs; ginkgo's JUnit report
# of the suite lands in out/e2e-junit.xml.
E2E_JUNIT ?= $(CURDIR)/out/e2e-junit.xml

test: vet unit e2e

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: build $(FLANNELD) $(CNI_PLUGINS)
	@mkdir -p $(dir $(E2E_JUNIT))
	OVERLAYLAB_BIN=$(CURDIR)/$(BIN) $(GO) test -v -count=1 -timeout $(E2E_TIMEOUT) ./e2e/ -ginkgo.v -ginkgo.label-filter='!soak' -ginkgo.junit-report=$(E2E_JUNIT)

# Five minutes of agent restarts and an etcd restart under continuous pings
# (root; not in CI). SOAK_DURATION=2m shortens it.
soak: build
	OVERLAYLAB_BIN=$(CURDIR)/$(BIN) $(GO) test -v -count=1 -timeout 30m ./e2e/ -ginkgo.v -ginkgo.label-filter=soak

# Needs root for the data plane (a lab per configuration; a few minutes). Each
# command rewrites its own section of docs/PERFORMANCE.md; then the Go benchmarks.
bench: build
	./$(BIN) bench
	./$(BIN) bench control --agents 1000
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Labs of 500 and 1000 hosts built as `up` builds them (root, ~10 minutes on
# two cores); rewrites the lab-scale section of docs/PERFORMANCE.md.
SCALE_HOSTS ?= 500,1000
bench-scale: build
	./$(BIN) bench scale --hosts $(SCALE_HOSTS) --containers 1 --underlay 172.20.0.0/16

# Every fuzz target for FUZZTIME each (seed corpora run in `make test` too); new
# inputs are minimized for at most 5 s, so large ones do not eat the budget.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; \
	done

clean:
	rm -rf bin

# Upstream flanneld (cgo for its udp backend, without its tencentvpc backend).
flanneld: $(FLANNELD)

$(FLANNELD): $(FLANNELD_PIN) hack/build-flanneld.sh hack/lib.sh
	hack/build-flanneld.sh $(FLANNEL_VERSION) $@
	touch $@

# The CNI flannel meta-plugin and the plugins it delegates to, into bin/cni/.
cni-plugins: $(CNI_PLUGINS)

$(CNI_PLUGINS) &: $(CNI_PIN) hack/build-cni-plugins.sh hack/lib.sh
	hack/build-cni-plugins.sh $(CNI_FLANNEL_VERSION) $(CNI_PLUGINS_VERSION) $(CNI_DIR)
	touch $(CNI_PLUGINS)

$(FLANNELD_PIN):
	@mkdir -p $(@D) && rm -f $(PIN_DIR)/flanneld-* && touch $@

$(CNI_PIN):
	@mkdir -p $(@D) && rm -f $(PIN_DIR)/cni-* && touch $@
