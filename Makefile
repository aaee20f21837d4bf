# uhrforge: the two commands are `make demo` and `make test`; both build .venv if missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/demo
PROFILE ?= demo
export MPLBACKEND := Agg
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: env demo test test-fast ui bench lock clean-demo

env:
	@bash infra/bootstrap.sh
	@bash infra/install_services.sh

demo: env
	$(VENV)/bin/uhr demo --data-root $(DATA) --profile $(PROFILE)

test: env
	$(PY) -m pytest -q --durations=15

test-fast: env
	$(PY) -m pytest -q -m "not slow" -x

ui: env
	@$(PY) -c "from orchestration.pipeline import dagster_home_for; dagster_home_for('$(DATA)')"
	DAGSTER_HOME=$(abspath $(DATA))/dagster_home UHR_DATA_ROOT=$(abspath $(DATA)) UHR_RAW_ROOT=$(abspath $(DATA))/raw \
	UHR_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: env
	$(PY) benchmarks/filters.py

# Re-resolve the lock from requirements/requirements.in (needs the package registries).
lock:
	$(VENV)/bin/uv pip compile requirements/requirements.in -o requirements/requirements.lock --python-version 3.11 \
	  --find-links /opt/wheels --extra-index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple \
	  -c /etc/xdg/pip/constraints.txt --index-strategy unsafe-best-match

clean-demo:
	rm -rf $(DATA)
