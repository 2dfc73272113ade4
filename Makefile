# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml, so no other set-up step exists.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

CHROMIUM ?= /usr/bin/chromium

.PHONY: venv demo test test-ui check-chromium lab bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mtkit)"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m mtkit demo

test: $(STAMP)
	$(BIN)/ruff check mtkit tests bench
	$(BIN)/ruff format --check mtkit tests bench
	MTKIT_UI_TESTS=0 $(BIN)/python -m pytest --nbval-lax --nbval-current-env tests notebooks

# Every notebook in JupyterLab in a real browser (Debian's Chromium, driven by Playwright): Run
# All, the panel's sliders, Run and Stop. Screenshots go to test-artifacts/screenshots/.
test-ui: check-chromium $(STAMP)
	MTKIT_UI_TESTS=1 MTKIT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -v -s tests/browser

check-chromium:
	@test -x $(CHROMIUM) || { \
	  echo "make test-ui needs Chromium at $(CHROMIUM), and it is not there. Install it with"; \
	  echo "    sudo apt-get update && sudo apt-get install -y chromium"; \
	  echo "(or run make test-ui CHROMIUM=/path/to/chromium). No browser is downloaded."; \
	  exit 1; }

lab: $(STAMP)
	MPLBACKEND=module://matplotlib_inline.backend_inline $(BIN)/jupyter lab notebooks/

# Rewrites the sections of BENCHMARKS.md (each script owns one section).
bench: $(STAMP)
	$(BIN)/python bench/train_loop.py --markdown BENCHMARKS.md
	$(BIN)/python bench/label_efficiency.py --markdown BENCHMARKS.md
	$(BIN)/python bench/adapters.py --markdown BENCHMARKS.md
	$(BIN)/python bench/text.py --markdown BENCHMARKS.md
	$(BIN)/python bench/real_images.py --markdown BENCHMARKS.md
	$(BIN)/python bench/memory.py --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
