# Two entry points for a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   - set up everything, then run the most end-to-end loop that exists
#   make test   - set up everything, then lint (ruff, ruff format --check, mypy) and run the whole test suite
# Both create .venv and install from nothing; system packages come from apt-get.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch is pinned first: any other torch spec pulls several GB of CUDA packages.
TORCH  := torch==2.13.0

.PHONY: setup system-deps test lint demo bench clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[cloud,openvino,dev]'
	touch $@

# mosquitto: the MQTT broker tests and the demo run; qemu-user: a CPU without VNNI, emulated, for the INT8
# parity test; chromium: the status page and console browser tests; postgresql: the fleet store's contract
# tests run against a real server (initdb/pg_ctl into a temp folder; the packaged cluster is not used).
system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (the fleet store tests) with apt-get$(if $(SUDO), (via sudo),)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null || \
	  echo "postgresql could not be installed: the PostgreSQL store tests will skip"; }
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  echo "installing mosquitto with apt-get$(if $(SUDO), (via sudo),)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
	@command -v qemu-x86_64 >/dev/null 2>&1 || { \
	  echo "installing qemu-user (INT8 checked on an emulated CPU without VNNI) with apt-get$(if $(SUDO), (via sudo),)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq qemu-user >/dev/null || \
	  echo "qemu-user could not be installed: the emulated-CPU INT8 test will skip"; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (headless browser tests) with apt-get$(if $(SUDO), (via sudo),)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null || \
	  echo "chromium could not be installed: the browser tests will skip"; }

# ruff (rules and format) and mypy over the packages (its settings: [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

# three workers on two cores: the suite waits on peers (brokers, servers, subprocesses, fsync) much of the
# time, and the CPUs stay ~35 % idle with three (measured: 573 s with two workers and 467 s with four, then
# 468 s with three once the short demo skipped its weak drill); the demo's end-to-end test runs beside the rest. The 15 slowest are listed at the end: the suite's
# budget in CI is 10 minutes. On a 2-core AMD EPYC without AVX-512 (2026-12-01) the same suite took 972 s:
# training and inference run 2-3x slower there, and the short demo beside the rest 548 s; then 806 s once
# the anomaly coreset was 14x faster and the trainer's OpenMP threads stopped spinning (20.6 CPU-minutes),
# and 655 s and 544 s in two clean-clone CI runs there (18.9 and 15.3 CPU-minutes): within the 10 minutes
# when the machine is quiet, not when it is busy.
test: setup lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 3 --durations=15

demo: setup
	$(BIN)/edge-sim demo

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info
