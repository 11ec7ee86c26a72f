# tideline — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
GO  ?= go

# Pinned tool versions (see ../shared/DESIGN.md "Real parts"). Bump them here only.
TEMPORAL_CLI_VERSION := v1.5.1
MINIO_VERSION        := v0.0.0-20260212201848-7aac2a2c5b7c
NATSCLI_VERSION      := v0.5.0
HEY_VERSION          := v0.1.4
# make compose-test only: docker compose v2 (built from source), and the
# nats-server in the nats:2.11-alpine stand-in.
COMPOSE_VERSION      := v2.40.3
NATS_STANDIN_VERSION := v2.11.17

export PATH := $(BIN):$(PATH)

.PHONY: help tools browser build test vet bench faults soak dev fuzz clean compose-test

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

tools: ## build the pinned Temporal CLI, MinIO, nats CLI and hey into bin/ (skips what is already there)
	@scripts/install-tool.sh temporal github.com/temporalio/cli/cmd/temporal $(TEMPORAL_CLI_VERSION)
	@scripts/install-tool.sh minio github.com/minio/minio $(MINIO_VERSION)
	@scripts/install-tool.sh nats github.com/nats-io/natscli/nats $(NATSCLI_VERSION)
	@scripts/install-tool.sh hey github.com/rakyll/hey $(HEY_VERSION)

browser: ## install Debian's chromium for the dashboard's browser test, if no Chromium is there
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$TIDELINE_CHROMIUM" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium || command -v chromium-browser || echo "$$TIDELINE_CHROMIUM"

build: ## build bin/tideline
	$(GO) build -o $(BIN)/tideline ./cmd/tideline

vet: ## gofmt check and go vet
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "not gofmt-ed (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# The fault suite (./test) runs last and without the race detector: its
# system under test is separate processes built without it, and racing the
# driver would only slow the clock it keeps.
test: tools vet ## the README's test command: tools, vet, every test against the real stack, then the fault suite
	$(GO) test -race -count=1 -v -p 1 -timeout 40m $$($(GO) list ./... | grep -v '^tideline/test$$')
	$(GO) test -count=1 -v -timeout 20m ./test

compose-test: tools ## docker compose up for real on a Docker engine (installed and started if none answers), driven end to end; skipped loudly where no engine can run
	COMPOSE_VERSION=$(COMPOSE_VERSION) NATS_STANDIN_VERSION=$(NATS_STANDIN_VERSION) \
	TEMPORAL_CLI_VERSION=$(TEMPORAL_CLI_VERSION) MINIO_VERSION=$(MINIO_VERSION) scripts/compose-test.sh

faults: tools ## the fault suite once: kill -9 of stream, worker and serve, MinIO down, NATS and Temporal restarts, a backfill twice at once, the worker killed during Maintain
	$(GO) test -count=1 -v -timeout 20m -run TestFaults ./test

bench: tools ## run the benchmarks
	scripts/bench.sh

soak: tools ## the fault suite, repeated for TIDELINE_SOAK (default 30m)
	TIDELINE_SOAK=$${TIDELINE_SOAK:-30m} $(GO) test -count=1 -v -timeout 0 -run TestFaults ./test

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in ./spec/ ./lake/; do for t in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
	  echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime 5s $$pkg || exit 1; done; done

dev: tools build ## start the whole stack locally (data in ./.tideline)
	$(BIN)/tideline dev

clean: ## remove built binaries (keeps the slow-to-build tools)
	rm -f $(BIN)/tideline
