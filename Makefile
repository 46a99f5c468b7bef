# netdemo developer loop.  Two commands on a fresh machine:
#   make run    set up .venv and start the daemon with local defaults
#   make test   set up .venv and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra arguments for the daemon, e.g. make run ARGS="--tcp 9007"
ARGS ?=
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-k echo -x"
PYTEST_ARGS ?=
# The reactor: netdemo's (see docs/benchmarks.md) for make run; make test
# uses Twisted's default unless REACTOR=netdemo is given (CI runs both).
RUN_REACTOR ?= netdemo
REACTOR ?=

.PHONY: run test lint deps bench clean

# Two stamps: make run installs what running needs; make test and make lint
# add the test and lint tools.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

$(RUN_STAMP): pyproject.toml twisted/plugins/netdemo.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	# Regenerate Twisted's plugin cache as the installing user.
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $@

# Ctrl-C stops the daemon (it drains, then exits through SIGTERM as twistd
# does): that is the normal end of make run, not an error to report.
run: $(RUN_STAMP)
	@trap : INT; $(BIN)/twistd -n --pidfile= --reactor=$(RUN_REACTOR) netdemo $(ARGS); \
	status=$$?; case $$status in 0|130|143) exit 0;; *) exit $$status;; esac

test: $(DEV_STAMP)
	COLUMNS=80 NETDEMO_REACTOR=$(REACTOR) $(BIN)/pytest $(PYTEST_ARGS)

# mypy checks what pyproject.toml's [tool.mypy] files lists: src, the
# dropin, tests, bench and tools.
lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests twisted tools $(wildcard bench)
	$(BIN)/ruff format --check src tests twisted tools $(wildcard bench)
	$(BIN)/mypy --config-file pyproject.toml

# The import graph of src/netdemo; fails on a cycle or on a service module
# importing another.  Needs nothing but Python.
deps:
	$(PYTHON) tools/deps.py src/netdemo

bench: $(DEV_STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(MAKE) -C bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist bench/build .pytest_cache .mypy_cache .ruff_cache
	find . -name dropin.cache -delete
