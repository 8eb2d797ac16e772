# Two commands on a fresh machine with Python 3.11+:
#   make demo   set up, then fetch the bundled sample feeds, sync the sample subscribers
#               and write the digests to outbox/ (open outbox/index.html)
#   make test   set up, then run ruff, mypy and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= examples/newsletter.toml
PYTEST_ARGS ?=
N ?=

.PHONY: demo test lint pytest bench soak clean venv

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/newsletter --config $(CONFIG) db upgrade
	$(BIN)/newsletter --config $(CONFIG) fetch
	$(BIN)/newsletter --config $(CONFIG) subscribers sync
	$(BIN)/newsletter --config $(CONFIG) preview

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test: lint pytest

# make bench [N=10000]: the send pipeline's speed on this machine (README, Performance),
# with rss2email on the same entries as a peer (the bench extra), then the CLI's start-up
# time (benchmarks/cli_startup.py), then the queue mode (README, Scaling out: Celery
# workers and the PostgreSQL outbox; skipped, saying why, without PostgreSQL or
# redis-server). make bench QUEUE=1: the queue mode alone.
QUEUE ?=
bench: venv
ifeq ($(QUEUE),)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run $(if $(N),--n $(N),)
	$(BIN)/python -m benchmarks.cli_startup
endif
	$(BIN)/python -m benchmarks.queue
	$(BIN)/python -m benchmarks.outbox_pg

# make soak [DAYS=30 SEEDS=1,2,3,4,5 DATABASE=sqlite|postgresql+psycopg://...]: a simulated
# month of SMTP faults, kills and concurrent sends; non-zero on any duplicate, loss or hang
DAYS ?= 30
SEEDS ?= 1,2,3,4,5
DATABASE ?= sqlite
soak: venv
	$(BIN)/python -m tests.soak --days $(DAYS) --seeds $(SEEDS) --database $(DATABASE)

clean:
	rm -rf $(VENV) outbox newsletter.db newsletter.db-* .pytest_cache .mypy_cache .ruff_cache
