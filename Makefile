# unionfs-rs entry points. `make test` and `make demo` set up what they need on a fresh
# Debian 12 (installing packages when run as root), so they work on a clean machine.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)

LIB := source scripts/lib.sh &&
# External suites and benchmarks live in scripts/, one script per target.
SUITES := bench pjdfstest fsx difftest stress podman-e2e docker-check

.PHONY: all build test lint demo deps $(SUITES)

all: build

build:
	@$(LIB) ul_build_deps
	cargo build --release

deps:
	@$(LIB) ul_test_deps

# Every test: unit tests, integration tests through real mounts (kernel overlayfs as the
# reference, then unionfs-rs), rootless mounts, CLI tests. Root runs all of them; a normal
# user runs the rest and sees SKIP lines for those needing root.
test: deps
	cargo test --workspace --no-fail-fast

lint:
	@$(LIB) ul_ensure_rust
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

demo:
	@bash scripts/demo.sh

$(SUITES):
	@test -f scripts/$@.sh || { echo "make $@: scripts/$@.sh does not exist yet" >&2; exit 1; }
	bash scripts/$@.sh
