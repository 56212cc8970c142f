# gatewayd: build and test. `make check` is what CI runs.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build check deps fmt-check vet test bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o gatewayd ./cmd/gatewayd

# check installs what the tests need, then runs every check and test:
# formatting, vet, unit and integration tests (real libcoap peers), with
# the race detector.
check: deps fmt-check vet test

deps:
	./scripts/test-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test:
	$(GO) test -race -count=1 -timeout 30m ./...

bench:
	./bench/proxy.sh

clean:
	rm -f gatewayd
