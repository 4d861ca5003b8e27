# overlaylab: build, run the lab, test.
GO      ?= go
BIN     := bin/overlaylab
E2E_TIMEOUT ?= 40m

FUZZTIME ?= 20s

.PHONY: build lab-up lab-down test unit e2e bench fuzz soak vet clean

build:
	$(GO) build -o $(BIN) ./cmd/overlaylab

# Needs root: builds the default 3-host udp lab, verifies it, prints a summary.
lab-up: build
	./$(BIN) up

lab-down: build
	./$(BIN) down

vet:
	$(GO) vet ./...

# Unit tests (no root needed), then the end-to-end suite (skips without root).
test: vet unit e2e

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: build
	OVERLAYLAB_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./e2e/ -ginkgo.v -ginkgo.label-filter='!soak'

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
