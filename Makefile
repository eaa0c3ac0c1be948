# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels (override for a GPU box: make TORCH=torch)
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# The quickstart caps training: the recipe's 5 epochs are ~15,600 optimizer steps (~50 min on 2 CPU cores).
# Full run: make run RUN_ARGS="--set model.base=builtin:tiny"
RUN_ARGS ?= --set model.base=builtin:tiny --set train.max_steps=300

.PHONY: install run test fuzz bench bench-smoke tiny-model clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install "$(TORCH)" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch" 
	$(PIP) install -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import runner, trl, peft, deepspeed, datasketch"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/recipe run recipes/poetry_lora.yaml $(RUN_ARGS)

test: install
	$(BIN)/python -m pytest -q

# Pretrain builtin:tiny with our own runner (recipes/tiny_pretrain.yaml, ~1 h on one CPU core) and write
# runner/builtin/tiny/model.safetensors + manifest.json. CI and `make test` never run it.
tiny-model: install
	OMP_NUM_THREADS=1 $(BIN)/python -m runner.builtin.make_tiny

# the recipe fuzzer (tests/test_fuzz.py) at length: `make test` runs 40 derandomized examples per property,
# this runs FUZZ_EXAMPLES fresh ones (about 20 per second per core); a failure prints the recipe that broke it
FUZZ_EXAMPLES ?= 5000
fuzz: install
	RECIPE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# every bench/*.py, full size; bench-smoke: each with --smoke (bench/README.md), as `make test` does
bench: install
	set -e; for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

bench-smoke: install
	set -e; for b in bench/*.py; do echo "== $$b --smoke"; $(BIN)/python $$b --smoke; done

clean:
	rm -rf $(VENV) .recipe recipes/.recipe runs
