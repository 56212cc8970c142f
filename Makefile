# gatewayd: build and test. `make check` is what CI runs.

GO      ?= go
VERSION ?= $(shell packaging/version.sh)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build check deps fmt-check vet test bench clean fuzz-brief fuzz-campaign soak soak-brief

all: build

# build: the daemon as the Debian package ships it, without the demo
# (-tags nodemo; `go run ./cmd/gatewayd` has the demo).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags nodemo -ldflags "$(LDFLAGS)" -o gatewayd ./cmd/gatewayd

# check installs what the tests need, then runs every check and test:
# formatting, vet, unit and integration tests (real libcoap peers), with
# the race detector; every fuzz target briefly; a one-minute soak.
check: deps fmt-check vet test fuzz-brief soak-brief

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
	# The message layers make raw system calls only without -race
	# (coap/stream/sys_linux.go): their tests run once in that build too.
	$(GO) test -count=1 ./coap/...

bench:
	./bench/proxy.sh

# fuzz-brief runs every fuzz target for FUZZ_BRIEF (5000 executions each,
# about 1.5 minutes in all on 2 cores); a failing input stays in the
# package's testdata/fuzz/ and fails the target. See docs/RELIABILITY.md.
FUZZ_BRIEF ?= 5000x
fuzz-brief:
	./scripts/fuzz.sh brief $(FUZZ_BRIEF)

# fuzz-campaign runs every fuzz target for FUZZ_TIME, one after the other,
# niced, with one worker, and writes $(FUZZ_OUT)/results.{tsv,md}.
FUZZ_TIME ?= 10m
FUZZ_OUT  ?= fuzz-results
fuzz-campaign:
	FUZZ_NICE=19 ./scripts/fuzz.sh campaign $(FUZZ_TIME) $(FUZZ_OUT)

# soak runs the daemon under mixed load for SOAK_TIME and checks that its
# RSS, goroutines and open files stay flat; it writes samples.csv,
# summary.md into SOAK_OUT and the plot to SOAK_PNG (docs/soak.png, which
# docs/RELIABILITY.md shows). soak-brief is its
# one-minute form, judged after a 30 s warm-up. See docs/RELIABILITY.md.
SOAK_TIME ?= 30m
SOAK_OUT  ?= soak-results
SOAK_PNG  ?= docs/soak.png
soak:
	nice -n 10 $(GO) run ./bench/soak -duration $(SOAK_TIME) -out $(SOAK_OUT) -png $(SOAK_PNG)
soak-brief:
	$(GO) run ./bench/soak -duration 1m -warmup 30s -out $(SOAK_OUT)/brief

clean:
	rm -f gatewayd

# deb builds gatewayd_<version>-1_{amd64,arm64,armhf}.deb into dist/,
# offline once the modules are downloaded; see packaging/README.md.
# VERSION=1.2.3 on the command line sets the version.
.PHONY: deb
deb:
	./packaging/build-deb.sh amd64 arm64 armhf
