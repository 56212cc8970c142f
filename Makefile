# gatewayd: build and test. `make check` is what CI runs.

GO      ?= go
VERSION ?= $(shell packaging/version.sh)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build check deps fmt-check vet test bench clean

all: build

# build: the daemon as the Debian package ships it, without the demo
# (-tags nodemo; `go run ./cmd/gatewayd` has the demo).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags nodemo -ldflags "$(LDFLAGS)" -o gatewayd ./cmd/gatewayd

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
	# Allocation counts mean nothing under -race: assert them in a pass without it.
	$(GO) test -count=1 -run 'NotAllocate' ./...

bench:
	./bench/proxy.sh

clean:
	rm -f gatewayd

# deb builds gatewayd_<version>-1_{amd64,arm64,armhf}.deb into dist/,
# offline once the modules are downloaded; see packaging/README.md.
# VERSION=1.2.3 on the command line sets the version.
.PHONY: deb
deb:
	./packaging/build-deb.sh amd64 arm64 armhf
