# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml, so no other set-up step exists.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test lab bench clean

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
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env tests notebooks

lab: $(STAMP)
	MPLBACKEND=module://matplotlib_inline.backend_inline $(BIN)/jupyter lab notebooks/

# Rewrites the sections of BENCHMARKS.md (each script owns one section).
bench: $(STAMP)
	$(BIN)/python bench/train_loop.py --markdown BENCHMARKS.md
	$(BIN)/python bench/label_efficiency.py --markdown BENCHMARKS.md
	$(BIN)/python bench/adapters.py --markdown BENCHMARKS.md
	$(BIN)/python bench/text.py --markdown BENCHMARKS.md
	$(BIN)/python bench/memory.py --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
