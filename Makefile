# Two commands: `make serve` (set up and run the app) and `make test` (set up and run every check).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install install-test install-bench browser lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip (not uv/poetry) so that torch and torchvision come from this machine's local wheels where they exist.
$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-app

# bench/ also needs the libraries it times against (the bench extra).
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-app

install: $(VENV)/.installed-app
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

# Browser tests drive Chromium: Debian's package when root, else Playwright's own download.
browser:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else $(BIN)/python -m playwright install chromium; fi

serve: install
	$(BIN)/convscope serve --host $(HOST) --port $(PORT)

lint: install-test
	$(BIN)/ruff check .

typecheck: install-test
	$(BIN)/mypy

unit: install-test browser
	$(BIN)/pytest

test: install-test browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: install-bench
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
