# `make test` and `make demo` create .venv from requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test test-fast venv lint demo clean wheel

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The main job: search -> pick -> retrain -> export on the embedded digits
# data, then a summary. Rerunning resumes finished steps from WORK. A config
# with search.reward.kind='latency' gets its latency table built first (a
# no-op for other configs; an existing table is resumed or reused).
WORK ?= workdirs/demo
CONFIG ?= configs/quick.py
MODEL_NAME ?= aps_digits

demo: venv
	$(PY) -m aps_tf.latency build --config=$(CONFIG) --noprogress
	$(PY) -m aps_tf.search --config=$(CONFIG) --workdir=$(WORK)/search
	$(PY) -m aps_tf.train --config=$(CONFIG) --arch=$(WORK)/search/arch.json --workdir=$(WORK)/train
	$(PY) -m export.export_model --workdir=$(WORK)/train --export_base=$(WORK)/serving \
	  --model_name=$(MODEL_NAME) --serving_root=$(abspath $(WORK))/serving
	$(PY) -m aps_tf.experiments.summary --search=$(WORK)/search --train=$(WORK)/train \
	  --export_dir=$$($(PY) -c "from aps_tf.experiments import summary; print(summary.latest_version_dir('$(WORK)/serving/$(MODEL_NAME)'))")

# The full suite (what CI runs), on 2 workers. Expensive fixtures (one trained
# child, its export) are built once per run and shared between the workers
# (tests/helpers/shared_runs.py). The live TF-Serving test runs only with
# APS_TF_LIVE_SERVING=1 and tensorflow_model_server on PATH (no package registry
# ships the server binary); the run's summary says when it was left out.
test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# Unit tests only, for the edit-test loop: everything not marked
# @pytest.mark.slow where it is written (end-to-end runs, subprocesses,
# binaries, trained models, XLA compilations).
test-fast: venv
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

# dist/aps_tf-VERSION-py3-none-any.whl (`pip install 'dist/*.whl[qat,serving]'`).
wheel: venv
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

# buildifier comes from npm (@bazel/buildifier, pinned in package-lock.json).
BUILDIFIER := node_modules/.bin/buildifier

lint: venv
	@if [ ! -x $(BUILDIFIER) ]; then \
	  npm ci --no-audit --no-fund || { echo "lint: 'npm ci' failed; cannot install buildifier" >&2; exit 1; }; \
	fi
	$(BUILDIFIER) -mode=check -lint=warn BUILD
	$(PY) -m pyflakes aps_tf export configs benchmarks tests

clean:
	rm -rf $(VENV)
