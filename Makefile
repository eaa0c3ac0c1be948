# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: an unpinned torch pulls GBs of CUDA wheels (override for a GPU box: make TORCH=torch);
# numpy with it, so its import check does not warn "Failed to initialize NumPy"
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# The quickstart caps training: the recipe's 5 epochs are ~15,600 optimizer steps (~50 min on 2 CPU cores).
# Full run: make run RUN_ARGS="--set model.base=builtin:tiny"
RUN_ARGS ?= --set model.base=builtin:tiny --set train.max_steps=300

# `make test-min`: the lowest version pyproject.toml declares of each training library (transformers, trl,
# peft, accelerate, datasets, deepspeed; torch stays $(TORCH)) in a venv of its own, and the tests that
# exercise those libraries. Declared floors are tested floors.
VENV_MIN ?= .venv-min
BIN_MIN := $(VENV_MIN)/bin
PIP_MIN := $(BIN_MIN)/python -m pip -q --disable-pip-version-check
MIN_TESTS ?= tests/test_train_config.py tests/test_train_sft.py tests/test_train_labels.py tests/test_train_ewc.py \
	tests/test_train_eval_export.py tests/test_train_deepspeed.py tests/test_train_levers.py tests/test_train_launch.py \
	tests/test_builtin_tiny.py tests/test_templates.py tests/test_source_checkout.py

.PHONY: install run test test-min fuzz bench bench-smoke tiny-model clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install "$(TORCH)" numpy 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch" 
	$(PIP) install -e ".[test,ray]" 2>&1 | grep -v "^WARNING: Location" || true
	# deepspeed is found, not imported: importing it prints "Setting accelerator to CPU" on a machine without CUDA
	$(BIN)/python -c "import runner, trl, peft, datasketch, ray, importlib.util as u; assert u.find_spec('deepspeed')"
	touch $@

install: $(VENV)/.installed

$(VENV_MIN)/.installed: pyproject.toml .ci/min_constraints.py
	test -x $(BIN_MIN)/python || $(PY) -m venv $(VENV_MIN)
	$(PIP_MIN) install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP_MIN) install "$(TORCH)" numpy 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN_MIN)/python .ci/min_constraints.py > $(VENV_MIN)/constraints.txt
	$(PIP_MIN) install -e ".[test]" -c $(VENV_MIN)/constraints.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN_MIN)/python .ci/min_constraints.py --check
	touch $@

# DeepSpeed JIT-builds its ops per version: a folder of its own keeps the two venvs from rebuilding each other's
test-min: $(VENV_MIN)/.installed
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV_MIN))/torch_extensions $(BIN_MIN)/python -m pytest -q -p no:cacheprovider $(MIN_TESTS)

run: install
	$(BIN)/recipe run recipes/poetry_lora.yaml $(RUN_ARGS)

test: install
	$(BIN)/python -m pytest -q

# Pretrain builtin:tiny with our own runner (recipes/tiny_pretrain.yaml then tiny_chat.yaml, 1-1.5 h on 2 CPU
# cores) and write runner/builtin/tiny/model.safetensors + manifest.json, the shipped ones byte for byte.
# CI and `make test` never run it. The thread count
# changes the order of float sums, so it is pinned: the shipped weights were trained with 2 threads.
tiny-model: install
	OMP_NUM_THREADS=2 $(BIN)/python -m runner.tools.make_tiny

# the fuzzer (tests/test_fuzz.py: recipes, data files, templates) at length: `make test` runs a few derandomized examples per property,
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
	rm -rf $(VENV) $(VENV_MIN) .recipe recipes/.recipe runs
