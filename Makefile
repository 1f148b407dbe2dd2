# Two commands for readers and CI; each does its own set-up into .venv (Python 3.11).
#   make book   build the HTML book into _build/html (executes every chapter; the pages are replaced only
#               when the whole build passed)
#   make test   unit tests; the whole book built executed on another CPU's arithmetic (one thread, ATen's
#               default kernels), warnings and failed cells as errors; and every page of that build
#               checked in headless Chromium (figures, tables, errors, widths, console, requests); and
#               the reader's path: every chapter of reader/notebooks run as in Colab, outside the checkout
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
# MPLBACKEND is not exported: a Jupyter kernel draws inline figures only when it is unset (or inline), so
# Agg is set for the unit tests alone, which start no kernel. scripts/build_book.py sets the inline backend
# for the book's kernels, and the chapters call ddpm_lib.book.figures.book_style(), which also turns it on.
# Portability: `make test` (and `make nbval`) run the chapters as another CPU would (one thread, ATen's
# default kernels instead of AVX2), while `make book` keeps this machine's defaults, so both kinds of
# arithmetic are exercised. `make test` runs each chapter once: its executed build (allow_errors: false,
# warnings as errors) fails on any failing cell as nbval would, and gives the pages the browser checks.
# The unit tests, the executed book and the two halves of the reader's path run as four jobs, two at a time,
# one thread each (the two cores of a CI machine).
PORTABLE := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default
# TORCH_INDEX: the package index torch and torchvision come from (book/setup.md). Empty (the default): pip's
# default index, whose Linux torch is a CUDA build (~3 GB to download with its libraries). A CPU-only
# machine saves most of that with `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`; a given CUDA
# version with e.g. .../whl/cu126. The versions are requirements.txt's ranges.
TORCH_INDEX ?=
TORCH_REQS := $(shell grep -E '^torch(vision)?[<>=]' requirements.txt)

.PHONY: setup browser-deps test lint unit nbval book book-check test-book browser-test bench clean test-gpu student answer-key test-reader \
        test-reader-edition test-student-edition

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --index-url $(TORCH_INDEX) $(foreach r,$(TORCH_REQS),"$(r)"))
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

# Style and obvious mistakes (unused names, undefined names, long lines): ruff, configured in pyproject.toml.
lint: setup
	$(PY) -m ruff check ddpm_lib tests scripts

unit: setup
	MPLBACKEND=Agg $(PY) -m pytest tests -m "not browser" -q --durations=15

nbval: setup
	$(PORTABLE) $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

# Staged: built into _build/.staging, moved to _build/html only when the build passed and no page shows an
# error output.
book: setup
	$(PY) scripts/build_book.py

# Every page, link, citation and directive, warnings as errors, without executing (quick; nbval executes).
book-check: setup
	$(PY) scripts/build_book.py --no-execute

# The executed book as another CPU computes it, into _build/test/html (for make test).
test-book: setup
	$(PORTABLE) $(PY) scripts/build_book.py --out _build/test

# Every page of the executed book in headless Chromium: $$DDPM_BOOK_HTML, or _build/html when it is fresh
# (make book), else it builds the book into _build/browser first.
browser-test: setup browser-deps
	$(PY) -m pytest tests -m browser -q

test: setup browser-deps
	$(MAKE) lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(MAKE) -j2 --output-sync=line unit test-book test-reader-edition test-student-edition
	DDPM_BOOK_HTML=_build/test/html $(MAKE) browser-test

# On a machine with a CUDA GPU: the GPU tests, then every chapter in the CUDA profile.
test-gpu: setup
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'test-gpu needs a CUDA GPU')"
	$(PY) -m pytest tests -m cuda -q
	DDPM_PROFILE=cuda $(PY) -m pytest --nbval-lax notebooks -q -p no:cacheprovider

# The student edition for a course page: _build/student/notebooks (no solution cells, no answer text), a zip of
# them, and their HTML book (sphinx-exercise's hide_solutions) in _build/student/_build/html. Not executed; add
# STUDENT_FLAGS=--execute to run every chapter with its exercises blank.
student: setup
	$(PY) scripts/student_edition.py --html $(STUDENT_FLAGS)

# The teacher's answer key, apart from the book and the student edition: _build/answer-key/answer-key.md.
answer-key: setup
	$(PY) scripts/answer_key.py

# The reader's path (scripts/test_reader.sh): fresh venvs of Colab's Pythons (3.12 and 3.13) with Colab's
# packages (scripts/colab_runtime.txt) outside this checkout, the chapters' install cell run in each with the
# wheel, and every chapter of the reader's edition (3.12) and the student edition (3.13) executed from a
# copy in a temporary folder.
# CHAPTERS="01_forward_process ..." picks chapters; KEEP=1 keeps the folder.
# `make test` runs the two halves as separate jobs (test-reader-edition, test-student-edition) beside the unit
# tests and the book, four jobs on two cores.
test-reader: setup
	bash scripts/test_reader.sh

test-reader-edition: setup
	EDITIONS=reader bash scripts/test_reader.sh

test-student-edition: setup
	EDITIONS=student bash scripts/test_reader.sh

bench: setup
	$(PY) -m ddpm_lib bench --device cpu --quick

clean:
	rm -rf _build .pytest_cache
