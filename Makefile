# Two commands for readers and CI; each does its own set-up into .venv (Python 3.11).
#   make book   build the HTML book into _build/html (executes every chapter)
#   make test   unit tests, every notebook under nbval, every page of the book (warnings are errors), and a
#               headless-browser test of the sliders (chapters 1, 5 and 6 built executed, or a fresh make book)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg

.PHONY: setup browser-deps test unit nbval book book-check browser-test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# Headless Chromium and its driver for the browser test (Debian packages; needs root, or install them yourself).
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver (Debian packages)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium; the browser test will say how"; \
	else echo "chromium is missing: run 'sudo apt-get install chromium chromium-driver' for the browser test"; fi

unit: setup
	$(PY) -m pytest tests -m "not browser" -q

nbval: setup
	$(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

book: setup
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet

# Every page, link, citation and directive, warnings as errors, without executing (nbval executes).
book-check: setup
	$(PY) scripts/build_book.py --no-execute

browser-test: setup browser-deps
	$(PY) -m pytest tests -m browser -q

test: setup browser-deps
	$(MAKE) unit
	$(MAKE) nbval
	$(MAKE) book-check
	$(MAKE) browser-test

bench: setup
	$(PY) -m ddpm_lib bench --device cpu --quick

clean:
	rm -rf _build .pytest_cache
