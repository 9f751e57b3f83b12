# `make test` and `make demo` create .venv from requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test test-fast test-sweeps venv lint demo clean wheel

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The main job: search -> pick -> retrain -> export on the embedded digits
# data, then a summary. CONFIG is a shipped config name or a config file; each
# config gets its own WORK (workdirs/demo-NAME) unless WORK is given, and a
# rerun resumes finished steps from it. A config with
# search.reward.kind='latency' gets its latency table built first (a no-op for
# other configs; an existing table is resumed or reused).
CONFIG ?= quick
WORK ?= workdirs/demo-$(basename $(notdir $(CONFIG)))
MODEL_NAME ?= aps_digits

demo: venv
	$(PY) -m aps_tf.latency build --config=$(CONFIG) --noprogress
	$(PY) -m aps_tf.search --config=$(CONFIG) --workdir=$(WORK)/search
	$(PY) -m aps_tf.train --config=$(CONFIG) --arch=$(WORK)/search/arch.json --workdir=$(WORK)/train
	$(PY) -m aps_tf.export.export_model --workdir=$(WORK)/train --export_base=$(WORK)/serving \
	  --model_name=$(MODEL_NAME) --serving_root=$(abspath $(WORK))/serving
	$(PY) -m aps_tf.experiments.summary --search=$(WORK)/search --train=$(WORK)/train \
	  --export_dir=$$($(PY) -c "from aps_tf.experiments import summary; print(summary.latest_version_dir('$(WORK)/serving/$(MODEL_NAME)'))")

# The full suite (what CI runs), on 2 workers. Expensive fixtures (one trained
# child, its export) are built once per run and shared between the workers
# (tests/helpers/shared_runs.py). The live TF-Serving test runs only with
# APS_TF_LIVE_SERVING=1 and tensorflow_model_server on PATH (no package registry
# ships the server binary); the run's summary says when it was left out.
test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not sweep" tests

# Unit tests only, for the edit-test loop: everything not marked
# @pytest.mark.slow where it is written (end-to-end runs, subprocesses,
# binaries, trained models, XLA compilations).
test-fast: venv
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not sweep" tests

# The sweeps: checks the suite runs on one model or mode, repeated over the
# others (@pytest.mark.sweep: ImageNet-width Phi schedules, more Keras
# applications, more precisions).
test-sweeps: venv
	$(PY) -m pytest -q -n 2 --dist loadfile -m sweep tests

# dist/aps_tf-VERSION-py3-none-any.whl (`pip install 'dist/*.whl[qat,serving]'`).
wheel: venv
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

# buildifier comes from npm (@bazel/buildifier, pinned in package-lock.json).
# Without npm the BUILD check is skipped with a message, so `make test` needs
# only Python; BUILDIFIER_REQUIRED=1 (CI) turns that skip into a failure.
BUILDIFIER := node_modules/.bin/buildifier
BUILDIFIER_REQUIRED ?=
NPM ?= npm

lint: venv
	@if [ ! -x $(BUILDIFIER) ] && ! command -v $(NPM) >/dev/null 2>&1; then \
	  if [ -n "$(BUILDIFIER_REQUIRED)" ]; then \
	    echo "lint: npm not found; it installs buildifier, which BUILDIFIER_REQUIRED asks for" >&2; exit 1; \
	  fi; \
	  echo "lint: npm not found, so buildifier is skipped (BUILD is not checked); install Node.js/npm to check it" >&2; \
	else \
	  if [ ! -x $(BUILDIFIER) ]; then \
	    $(NPM) ci --no-audit --no-fund || { echo "lint: 'npm ci' failed; cannot install buildifier" >&2; exit 1; }; \
	  fi; \
	  echo "$(BUILDIFIER) -mode=check -lint=warn BUILD"; \
	  $(BUILDIFIER) -mode=check -lint=warn BUILD; \
	fi
	$(PY) -m pyflakes aps_tf export configs benchmarks tests tools

clean:
	rm -rf $(VENV)
