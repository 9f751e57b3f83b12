# `make test` and `make demo` create .venv from requirements.txt when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test venv lint demo clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# buildifier comes from npm (@bazel/buildifier, pinned in package-lock.json).
BUILDIFIER := node_modules/.bin/buildifier

lint:
	@if [ ! -x $(BUILDIFIER) ]; then \
	  npm ci --no-audit --no-fund || { echo "lint: 'npm ci' failed; cannot install buildifier" >&2; exit 1; }; \
	fi
	$(BUILDIFIER) -mode=check -lint=warn BUILD

clean:
	rm -rf $(VENV)
