# Everything runs inside .venv, which the first target that needs it creates.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: help demo demo-redis test fuzz lint typecheck docs check clean bench bench-smoke
.PHONY: test-versions
.PHONY: bench-instructions bench-instructions-smoke bench-scale bench-scale-smoke install-versions

help:
	@echo "make demo       serve the example app in development mode on http://127.0.0.1:8000"
	@echo "make demo-redis the same with 2 worker processes sharing Redis (WSGATE_STORAGE,"
	@echo "                default redis://127.0.0.1:6379/0)"
	@echo "make test       run the test suite"
	@echo "make test-versions  run the unit and wire tests on Python 3.10, 3.12 and 3.13"
	@echo "make check      ruff, mypy --strict and a strict docs build"
	@echo "make fuzz       run each fuzz target for FUZZ_SECONDS seconds (default 60)"
	@echo "make docs       build the docs into site/"
	@echo "make bench      measure the gate against a bare endpoint; writes bench/results/"
	@echo "make bench-smoke the same with tiny counts, to check that it runs (CI)"
	@echo "make bench-instructions  count the server's instructions per message and per"
	@echo "                connection under valgrind (apt-get install valgrind); writes bench/results/"
	@echo "make bench-instructions-smoke  the same with tiny counts (CI)"
	@echo "make bench-scale  20,000 idle connections on 4 workers, on one Redis and on a"
	@echo "                local Cluster: Redis cost per connect, message, idle minute; writes"
	@echo "                bench/results/ (redis-server and redis-cli)"
	@echo "make bench-scale-smoke  the same with tiny counts (CI)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.run

demo-redis: $(STAMP)
	WSGATE_STORAGE="$${WSGATE_STORAGE:-redis://127.0.0.1:6379/0}" \
		$(BIN)/python -m examples.run --workers 2

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The other Pythons the classifiers promise, each in a venv of its own (.venv-3.10, ...) with
# the test extra. They run the unit and wire tests: all but the real-browser tests
# (tests/browser), the Redis ones (tests/redis), the abuse test and the tests marked slow,
# which `make test` runs.
TEST_VERSIONS ?= 3.10 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
VERSIONS_PYTEST_ARGS := -m "not abuse and not slow" \
	--ignore=tests/browser --ignore=tests/redis --ignore=tests/abuse
# python3.X: the newest pyenv build of 3.X, else the one on PATH.
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),\
	$(shell command -v python$(1)))

.venv-%/.installed-test: pyproject.toml
	@test -n "$(call python_for,$*)" \
		|| { echo "make test-versions needs Python $* (pyenv install $*)" >&2; exit 1; }
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet -e ".[test]"
	@touch $@

# The other Pythons' venvs alone: .ci/run installs them while the 3.11 suite runs.
install-versions: $(foreach version,$(TEST_VERSIONS),.venv-$(version)/.installed-test)

# Every version runs, so that a failure on one does not hide another's. They run at once, each
# into a log of its own printed when all are done: the tests mostly wait on sockets, so three
# at a time take little longer than one (every test server binds a port of its own).
test-versions: $(foreach version,$(TEST_VERSIONS),.venv-$(version)/.installed-test)
	@start=$$(date +%s); for version in $(TEST_VERSIONS); do \
		( .venv-$$version/bin/python -m pytest $(VERSIONS_PYTEST_ARGS) $(PYTEST_ARGS) \
			> .venv-$$version/test.log 2>&1; echo $$? > .venv-$$version/test.rc ) & \
	done; wait; failed=""; for version in $(TEST_VERSIONS); do \
		echo "== Python $$version: .venv-$$version"; cat .venv-$$version/test.log; \
		test "$$(cat .venv-$$version/test.rc)" = 0 || failed="$$failed $$version"; \
	done; echo "== all versions: $$(( $$(date +%s) - start )) s"; \
	test -z "$$failed" || { echo "== failed on Python$$failed" >&2; exit 1; }

FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

lint: $(STAMP)
	$(BIN)/ruff check wsgate tests examples bench
	$(BIN)/ruff format --check wsgate tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

check: lint typecheck docs

# BENCH_ARGS="--runs 5 --seconds 10" for longer runs; bench-smoke only checks that it works.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke --output $(or $(TMPDIR),/tmp)/wsgate-bench-smoke

# INSTRUCTIONS_ARGS="--runs 2" to see how far two runs agree.
bench-instructions: $(STAMP)
	$(BIN)/python -m bench.instructions $(INSTRUCTIONS_ARGS)

bench-instructions-smoke: $(STAMP)
	$(BIN)/python -m bench.instructions --smoke --output $(or $(TMPDIR),/tmp)/wsgate-instructions-smoke

# SCALE_ARGS="--per-worker 2500 --idle 30" for a shorter run; see python -m bench.scale --help.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

bench-scale-smoke: $(STAMP)
	$(BIN)/python -m bench.scale --smoke --output $(or $(TMPDIR),/tmp)/wsgate-scale-smoke

clean:
	rm -rf $(VENV) .venv-3.* site .pytest_cache .mypy_cache .ruff_cache
