# CliRelay: `make run` serves, `make test` proves it. Nothing but Python 3.11+ and the package registries.
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8317
PY      = $(VENV)/bin/python

.PHONY: run test lint typecheck worker beat clean bench-translate bench-limits bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

## run: install, migrate, collect static files, bootstrap the admin, serve HTTP + WebSocket
##      (uvicorn; SERVER=daphne for Daphne; see manage.py serve)
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py bootstrap
	@echo "admin: http://$(HOST):$(PORT)/admin/"
	HOST=$(HOST) PORT=$(PORT) exec $(PY) manage.py serve

## test: install dev requirements, lint, type-check, run the whole suite
test: $(VENV)/.installed-dev lint typecheck
	$(VENV)/bin/pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy .

## worker / beat: Celery processes for a scaled-out deployment (needs REDIS_URL)
worker: $(VENV)/.installed
	exec $(VENV)/bin/celery -A gateway worker --loglevel=INFO

beat: $(VENV)/.installed
	exec $(VENV)/bin/celery -A gateway beat --loglevel=INFO

## bench-translate: time stream translation for every upstream -> client pair; table + bench/results/translate.json
bench-translate: $(VENV)/.installed
	$(VENV)/bin/python bench/translate.py

## bench-limits: latency admit() adds per request (no limits / in process / Redis); table + bench/results/limits.json
bench-limits: $(VENV)/.installed
	$(VENV)/bin/python bench/limits.py

## bench: CliRelay (uvicorn = make run, daphne, granian) vs LiteLLM vs Portkey, wrk, one fake upstream; table + bench/results/compare.{json,png}
bench:
	test -x .cache/bench/venv/bin/python || $(PYTHON) -m venv .cache/bench/venv
	.cache/bench/venv/bin/python -m pip install --quiet -r requirements.txt -r bench/requirements.txt
	.cache/bench/venv/bin/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .mypy_cache .ruff_cache .pytest_cache
