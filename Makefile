# petcd — the two set-up commands are `make run` and `make test`; each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APT_STAMP := $(VENV)/.apt-stamp
# make test's pytest-xdist worker processes (the tests mostly wait on the servers they start:
# two workers on two cores take about 10 minutes instead of 17); 0 runs them in this process.
TEST_WORKERS ?= 2

.PHONY: run test test-long lint typecheck proto bench clean install etcd FORCE

install: $(STAMP)

# The native front end (Rust): pip builds it through setuptools-rust, so a change to the
# crate re-runs the install.
NATIVE := native/frontend/Cargo.toml native/frontend/Cargo.lock $(wildcard native/frontend/src/*.rs)
# A missing built module (removed by hand or by a checkout) re-runs the install too.
NATIVE_BUILT := $(if $(wildcard src/petcd/_frontend*.so),,FORCE)

$(STAMP): pyproject.toml $(NATIVE) $(NATIVE_BUILT)
	@command -v cargo >/dev/null || { echo "error: building petcd needs Rust: install cargo (e.g. https://rustup.rs, or apt-get install cargo) and run make again" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's etcd-server / etcd-client (3.4): the reference for the differential tests.
etcd: $(APT_STAMP)

$(APT_STAMP): | $(STAMP)
	@# etcd and etcdctl 3.4 for the differential tests and benchmarks; zsh and fish run the
	@# scripts of `petcdctl completion` in the tests.
	@if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || \
	    ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q etcd-server etcd-client zsh fish; \
	fi
	touch $(APT_STAMP)

run: $(STAMP)
	$(BIN)/petcd --name default --data-dir default.petcd

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	cd native/frontend && cargo test -q --no-default-features --lib

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

test: $(STAMP) $(APT_STAMP) lint
	$(BIN)/pytest -m "not long" -q --durations=15 -n $(TEST_WORKERS)

test-long: $(STAMP) $(APT_STAMP)
	$(BIN)/pytest -m long -q --durations=15

bench: $(STAMP) $(APT_STAMP)
	$(MAKE) -C bench all

clean:
	rm -rf $(VENV) build src/*.egg-info native/frontend/target src/petcd/_frontend*.so

# Always out of date: a prerequisite that forces its target to run.
FORCE:
