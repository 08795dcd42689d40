# ferrymq. Needs only Go: `make run` starts the broker, `make test` runs every test.

# go from PATH, else the default install location of the official tarball.
ifeq ($(origin GO),undefined)
GO := $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
endif
# Tests that run go themselves (interop_test) look it up on PATH.
ifneq ($(findstring /,$(GO)),)
export PATH := $(dir $(GO)):$(PATH)
endif

# -race needs cgo and a C compiler. A machine with only Go has cgo off
# (go env CGO_ENABLED prints 0), so the tests then run without -race.
ifeq ($(origin RACE),undefined)
RACE := $(shell [ "$$($(GO) env CGO_ENABLED 2>/dev/null)" = 1 ] && echo -race)
endif

# Run time of each fuzz target under `make fuzz`.
FUZZTIME ?= 20s

# Extra flags for `make run`, e.g. make run ARGS='--log-level debug'.
ARGS ?=

.PHONY: build run test fuzz interop-amqp091 clean

build:
	$(GO) build -o bin/ferrymq ./cmd/ferrymq

# The embedded defaults: AMQP on :5672, data in ./data.
run: build
	./bin/ferrymq $(ARGS)

test:
	$(GO) vet ./...
	@if [ -z "$(RACE)" ]; then echo "note: tests run without -race, which needs cgo and a C compiler"; fi
	$(GO) test $(RACE) -timeout 10m ./...

# Each target needs its own `go test -fuzz` run: -fuzz accepts one target.
fuzz:
	@list=$$($(GO) test -list 'Fuzz.*' ./amqp/wire) || { echo "$$list" >&2; exit 1; }; \
	targets=$$(echo "$$list" | grep '^Fuzz' || true); \
	if [ -z "$$targets" ]; then echo "no fuzz targets in ./amqp/wire" >&2; exit 1; fi; \
	for t in $$targets; do \
		echo "== $$t for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./amqp/wire || exit 1; \
	done

# The amqp091-go client's own test suite, run against ferrymq.
interop-amqp091:
	$(GO) test -tags amqp091suite -run TestAMQP091Suite -v -timeout 20m ./interop_test/

# Leaves ./data alone: it is the broker's data, not a build product.
clean:
	rm -rf bin
