# ingestd: `make run` starts the service, `make test` checks everything.
CARGO ?= cargo
ARGS ?=

.PHONY: run test check fmt lint doc unit dist dist-test container e2e build release bench mixed soak

## Start the service on 127.0.0.1:8000 (5 s interval, batches of 3), its journal in ./data so
## that nothing acknowledged is lost. Extra flags: make run ARGS="--interval 1s"; in memory
## only: make run DATA_DIR=
DATA_DIR ?= data
run:
	$(CARGO) run --release --quiet -- $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

## Every check CI runs: formatting, lints, docs, unit, thread and HTTP tests, the shipped binary
## alone in an empty root, and the browser and API-schema tests.
test: fmt lint doc unit dist e2e

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets --locked -- -D warnings

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --locked --quiet

# cargo-nextest runs each test in its own process; plain cargo test is the fallback.
unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --no-fail-fast && $(CARGO) test --doc --locked; \
	else \
		$(CARGO) test --locked --no-fail-fast; \
	fi

## Dashboard and docs in headless Chromium, /metrics via prometheus-client, OpenAPI via
## openapi-spec-validator and schemathesis. Installs chromium, playwright-core and the Python tools.
e2e:
	bash tests/e2e.sh

## The shipped binary: target/dist/ingestd, release build with LTO (profile dist), statically linked (glibc's crt-static,
## so it runs with no shared library: a FROM scratch image, a chroot), no debug info; then its
## empty-root test. An explicit --target keeps RUSTFLAGS off build scripts and proc-macros.
## For perf, `cargo build --profile profiling` has the same code with line tables.
TARGET ?= $(shell rustc -vV | sed -n 's/^host: //p')
dist:
	RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' $(CARGO) build --profile dist --locked --target $(TARGET) --bin ingestd
	mkdir -p target/dist
	cp target/$(TARGET)/dist/ingestd target/dist/ingestd
	@echo "target/dist/ingestd: $$(stat -c %s target/dist/ingestd) bytes"
	$(MAKE) --no-print-directory dist-test

## target/dist/ingestd alone in an empty root (tests/dist.sh: root, or user namespaces), and
## contrib/ingestd.service: systemd-analyze verify, and its command as a non-root user with the
## unit's capability (tests/systemd.sh; parts skip, saying so, without root or systemd-analyze).
dist-test:
	bash tests/dist.sh target/dist/ingestd
	bash tests/systemd.sh target/dist/ingestd

## Builds the FROM scratch image (Dockerfile) from target/dist/ingestd and runs it: health,
## HEALTHCHECK, an ingestion kept in the /data volume across containers. Needs docker or podman
## that can run containers; not part of `make test`. See tests/container.sh for ENGINE flags.
container: dist
	bash tests/container.sh

check: test

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --release --locked

## Every performance figure (issue 7) against release builds: one table, and target/bench.json.
## Takes a few minutes; BENCH_SECONDS=3 for a quick look. Not part of `make test`.
bench:
	bash bench/run.sh
	bash bench/soak.sh 60 256 1

## 60 s of 256 connections mixing POST and GET while the pacer runs (also the end of `make bench`).
mixed:
	bash bench/soak.sh 60 256 1

## 10 minutes of mixed load (64 connections, 9 GETs per POST): memory over time.
soak:
	bash bench/soak.sh 600 64 9
