# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml or constraints.txt, so no other set-up step exists.
# Every install uses constraints.txt: the exact versions CI tests (pyproject.toml has ranges).
#
#   make demo               only what the demo needs (no Jupyter, no test tools)
#   make lab                adds JupyterLab and the pretrained MiniLM (notebook 09)
#   make test               everything: the pretrained model, the test tools, JupyterLab
#   make demo TORCH=cpu     PyTorch's CPU-only build from PyTorch's own index (a fresh .venv,
#                           or after `make clean`): about 1 GB instead of about 5.5 GB
#   make wheelhouse         every wheel the kit needs in wheelhouse/, for installs without network
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
export PYTHONUNBUFFERED := 1

CHROMIUM ?= /usr/bin/chromium

# TORCH=cpu: torch and torchvision (the versions in constraints.txt, which the +cpu builds
# satisfy) from PyTorch's CPU index, before anything else can ask PyPI for the CUDA build.
TORCH ?= default
CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_PINS = $(shell grep -E '^(torch|torchvision)==' $(CONSTRAINTS))
ifeq ($(TORCH),cpu)
INSTALL_TORCH = $(BIN)/python -m pip install --index-url $(CPU_INDEX) $(TORCH_PINS)
WHEEL_INDEX = --index-url $(CPU_INDEX) --extra-index-url https://pypi.org/simple
else ifeq ($(TORCH),default)
INSTALL_TORCH = true
WHEEL_INDEX =
else
$(error TORCH=$(TORCH): expected TORCH=cpu, or nothing for the default build CI tests)
endif

.PHONY: venv demo test test-ui check-chromium lab bench wheelhouse clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# One stamp per set of extras; the test set holds the others.
$(VENV)/.installed-demo: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install -e . -c $(CONSTRAINTS)
	touch $@

$(VENV)/.installed-lab: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install -e '.[lab,pretrained]' -c $(CONSTRAINTS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mtkit)"
	touch $@

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install -e '.[test,lab]' -c $(CONSTRAINTS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (mtkit)"
	touch $@ $(VENV)/.installed-demo $(VENV)/.installed-lab

venv: $(STAMP)

demo: $(VENV)/.installed-demo
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

lab: $(VENV)/.installed-lab
	MPLBACKEND=module://matplotlib_inline.backend_inline $(BIN)/jupyter lab notebooks/

# Every wheel that `pip install "mtkit[lab,pretrained]"` needs, mtkit's own included, for this
# platform and Python. Copy wheelhouse/ to each laptop (same OS, CPU and Python), then:
#     python -m pip install --no-index --find-links wheelhouse "mtkit[lab,pretrained]"
wheelhouse: | $(BIN)/python
	$(BIN)/python -m pip wheel --wheel-dir wheelhouse $(WHEEL_INDEX) -c $(CONSTRAINTS) '.[lab,pretrained]'

# Rewrites the sections of BENCHMARKS.md (each script owns one section).
bench: $(STAMP)
	$(BIN)/python bench/train_loop.py --markdown BENCHMARKS.md
	$(BIN)/python bench/label_efficiency.py --markdown BENCHMARKS.md
	$(BIN)/python bench/adapters.py --markdown BENCHMARKS.md
	$(BIN)/python bench/text.py --markdown BENCHMARKS.md
	$(BIN)/python bench/real_images.py --markdown BENCHMARKS.md
	$(BIN)/python bench/memory.py --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info wheelhouse
