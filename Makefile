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

.PHONY: build run test test-deps fuzz interop interop-amqp091 clean bench bench-deps

# The version ferrymq --version prints and logs at start: the nearest tag,
# commits since and the commit (git describe), else the Go toolchain's own
# VCS stamp (see cmd/ferrymq/version.go).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS = $(if $(VERSION),-X main.version=$(VERSION))

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ferrymq ./cmd/ferrymq
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ferrymqctl ./cmd/ferrymqctl

# The embedded defaults: AMQP on :5672, data in ./data.
run: build
	./bin/ferrymq $(ARGS)

# What the tests drive besides Go: headless Chromium (the web console),
# Prometheus (scrapes /metrics) and rabbitmqadmin (from rabbitmq-server, a
# client of the management API). Installed from Debian when missing.
TEST_DEBS = /usr/bin/chromium:chromium /usr/bin/prometheus:prometheus /usr/bin/rabbitmqadmin:rabbitmq-server

test-deps:
	@missing=; for d in $(TEST_DEBS); do [ -x "$${d%%:*}" ] || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then echo "the tests need:$$missing (no apt-get here: install them)" >&2; exit 1; fi; \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

# interop_test runs a broker binary it builds itself, which go test's cache
# cannot see: it always runs (-count=1) rather than replay a pass from
# before a broker change. It takes about 4 minutes alone and 9 on a loaded
# 2-core machine, hence its 20-minute timeout.
test: test-deps
	$(GO) vet ./...
	@if [ -z "$(RACE)" ]; then echo "note: tests run without -race, which needs cgo and a C compiler"; fi
	$(GO) test $(RACE) -timeout 10m $$($(GO) list ./... | grep -v /interop_test)
	$(GO) test $(RACE) -count=1 -timeout 20m ./interop_test/...

# Each target needs its own `go test -fuzz` run: -fuzz accepts one target.
FUZZ_PKGS = ./amqp/wire ./core/msgcodec ./mqtt
fuzz:
	@for pkg in $(FUZZ_PKGS); do \
		list=$$($(GO) test -list 'Fuzz.*' $$pkg) || { echo "$$list" >&2; exit 1; }; \
		targets=$$(echo "$$list" | grep '^Fuzz' || true); \
		if [ -z "$$targets" ]; then echo "no fuzz targets in $$pkg" >&2; exit 1; fi; \
		for t in $$targets; do \
			echo "== $$pkg $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# The bridge against real RabbitMQ and Mosquitto (Debian packages
# rabbitmq-server and mosquitto), which the tests start on free ports.
interop:
	$(GO) test -count=1 -tags realbrokers -run 'TestReal' -v -timeout 20m ./interop_test/

# The amqp091-go client's own test suite, run against ferrymq. Its recovery
# tests drop connections through the management API on the fixed port
# localhost:15672, hence the lock (one run at a time on this machine).
interop-amqp091:
	flock /tmp/port15672.lock $(GO) test -count=1 -tags amqp091suite -run TestAMQP091Suite -v -timeout 20m ./interop_test/

# Extra ferrybench flags for `make bench`, e.g. BENCH_ARGS='--reps 1 --duration 2s'.
BENCH_ARGS ?=
# Idle MQTT connections of the one extra idle-mqtt-conns-100k run (0: none).
BENCH_CONNS_LARGE ?= 100000

# ferrymq against RabbitMQ (with its MQTT plugin) and Mosquitto, each
# started on free ports in a temporary directory when installed (make
# bench-deps); every scenario against every broker, interleaved, medians of
# up to 3 runs. First, once, BENCH_CONNS_LARGE idle connections against a
# freshly started ferrymq and Mosquitto (about a minute more); that needs
# RLIMIT_NOFILE above it, which ferrybench raises when it may (root with
# CAP_SYS_RESOURCE) and otherwise notes as not run. Then, once,
# amqp-topology-10k (10,000 queues, 100,000 topic bindings) against a freshly
# started ferrymq and RabbitMQ: about 2 minutes more, most of them RabbitMQ
# declaring, binding and deleting (BENCH_ARGS='--topology-brokers ferrymq'
# leaves RabbitMQ out). Writes bench/results.md; about 17 minutes. Fails only
# when a ferrymq run fails.
bench: build
	$(GO) build -o bin/ferrybench ./cmd/ferrybench
	./bin/ferrybench --orchestrate --ferrymq-bin bin/ferrymq --bench-dir bench --out bench/results.md --conns-large $(BENCH_CONNS_LARGE) $(BENCH_ARGS)

# The brokers `make bench` compares against, from Debian packages; apt runs
# only when one is missing (as root, else through sudo).
bench-deps:
	@installed=$$(dpkg-query -W -f='$${Status}\n' rabbitmq-server mosquitto 2>/dev/null | grep -c '^install ok installed$$'); \
	if [ "$$installed" = 2 ]; then \
		echo "rabbitmq-server and mosquitto are installed"; \
	else \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server mosquitto; \
	fi

# Leaves ./data alone: it is the broker's data, not a build product.
clean:
	rm -rf bin
