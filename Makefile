# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Torch is pinned for dev/CI by constraints.txt (the CPU build); pyproject keeps a range.
CONSTRAINTS := -c constraints.txt

.PHONY: demo test test-slow lint bench docs clean

$(VENV)/.base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -q $(CONSTRAINTS) -e '.[dev]'
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/lth run configs/quickstart.toml --store runs

test: $(VENV)/.dev
	$(PY) -m pytest -q

test-slow: $(VENV)/.dev
	$(PY) -m pytest -q -m slow

# The docs site into site/; --strict fails on a broken link, a page missing from the nav or
# an API reference that names nothing.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests bench

bench: $(VENV)/.base
	$(PY) bench/train_speed.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
