# overlaylab: build, run the lab, test.
GO      ?= go
BIN     := bin/overlaylab
E2E_TIMEOUT ?= 40m

FUZZTIME ?= 20s

.PHONY: build lab-up lab-down test unit e2e bench fuzz vet clean

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
	OVERLAYLAB_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./e2e/ -ginkgo.v

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Every fuzz target for FUZZTIME each (seed corpora run in `make test` too).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin
