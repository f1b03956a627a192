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

# six workers on two cores: the suite waits on peers (brokers, servers, subprocesses, fsync) much of the
# time; with three the CPUs stayed ~35 % idle and the project's CI took 810 s (2026-12-06), with four a quiet run
# took 546-573 s while the suite's summed CPU (~870 CPU s, 2026-12-07) sets a floor of ~435 s on two cores: the
# cores still sat idle ~20 % of the time, three or four workers waiting at once (bench/RESULTS.md, "Test suite
# time", rounds 5 and 10). `--dist worksteal`:
# xdist's default hands each worker its share of the tests up front, and the worker that runs the short demo
# (~200-300 s) kept ~100 tests queued behind it while the others sat idle; an idle worker now takes queued tests
# from a busy one (the four workers' summed test times within 1.5 % of each other in one run, 2026-12-06).
# The 15 slowest are listed at the end: the suite's budget in CI is 10 minutes.
# tests.support.warm_caches first: where PYTHONDONTWRITEBYTECODE is set (the CI machine sets it) no process
# wrote bytecode, so each worker rewrote the asserts of every test module itself (~10 s of CPU each, before
# any test starts: xdist waits for every worker's collection) and every Python process compiled the project's
# modules it imported; it makes both once (see its docstring). pytest's own command is unchanged.
test: setup lint
	$(BIN)/python -m tests.support.warm_caches
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 6 --dist worksteal --durations=15

demo: setup
	$(BIN)/edge-sim demo

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info
