# Agent Vault: the single entry point. `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
# checkov pins an old boto3, so it lives in an environment of its own.
CHECKOV_VENV := .venv-checkov
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# Python writes bytecode in make's recipes even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): a fresh clone's venv has none, and without it every process the
# suite starts (workers, local mode, the CLI under test) compiles boto3, moto, pydantic...
# from source again, about a second each.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install browser lint lint-code lint-stacks test test-fast test-runtime synth openapi events demo local bench fuzz deploy requirements pin-agent-image clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.txt pyproject.toml lambdas/pyproject.toml agent/pyproject.toml local/pyproject.toml
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv venv --quiet --allow-existing $(VENV)
	uv pip install --quiet --python $(PY) -r requirements/dev.txt \
		-e . -e lambdas -e agent -e local
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed node_modules/.installed ## install Python and Node dependencies (pinned)

browser: ## Debian's Chromium for the browser test (apt when root; otherwise says what to run)
	@scripts/ensure_chromium.sh

lint: lint-code lint-stacks ## ruff check and format check, mypy (strict on lambdas/ and the SDK), bandit, pip-audit

lint-code: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lambdas/vault agent_vault local/agent_vault_local agent/sample_agent
	set -o pipefail; $(BIN)/bandit -q -c pyproject.toml -r lambdas agent_vault local agent stacks scripts 2>&1 | { grep -v 'but no failed test' || true; }
	$(PY) scripts/pip_audit.py

# mypy over the CDK app reads aws-cdk-lib's bindings (minutes on a cold cache): its own process
# and cache, so `make test` runs it beside the rest
lint-stacks: install
	$(BIN)/mypy --cache-dir .mypy_cache_stacks stacks

test: install browser ## install everything (the browser too), lint, the synth gates, the whole suite
	@# the stacks' mypy keeps one core busy; the other lint steps, then the synth gates, the other
	$(MAKE) --no-print-directory -j2 --output-sync=target lint-stacks lint-code synth
	$(BIN)/pytest -n 2
	$(MAKE) --no-print-directory test-runtime

test-fast: install browser $(CHECKOV_VENV)/.installed ## the suite without lint or synth (the checkov test still needs checkov)
	$(BIN)/pytest -n 2

# The functions and the agent image run Python 3.13; this venv is the machine's Python (3.11).
# The tests of what ships there (the vault's code, the SDK) run once more on the runtime's
# version, in a venv of its own, with the interpreter the Lambda bundle is compiled with
# (stacks/runtime_python.py). No such Python here (none can be installed from the
# package registries): a note says so and the suite has run on this venv's Python only.
RUNTIME_VENV := .venv-runtime
test-runtime: install ## the vault's and the SDK's tests again on the runtime's Python (3.13), if here
	@python=$$($(PY) -c "from stacks.runtime_python import runtime_interpreter as r; \
		print(r() or '')"); \
	if [ -z "$$python" ]; then \
		echo "note: no Python 3.13 on this machine (the functions' and the agent image's" \
			"runtime): the suite ran on $$($(PY) -V) only"; \
		exit 0; \
	fi; \
	set -e; \
	uv venv --quiet --allow-existing --python "$$python" $(RUNTIME_VENV); \
	uv pip install --quiet --python $(RUNTIME_VENV)/bin/python -r requirements/dev.txt \
		-e . -e lambdas -e agent -e local; \
	echo "the vault's and the SDK's tests on $$($(RUNTIME_VENV)/bin/python -V):"; \
	$(RUNTIME_VENV)/bin/pytest -n 2 -q tests/unit tests/integration tests/sdk

CHECKOV_VERSION := 3.3.30
$(CHECKOV_VENV)/.installed:
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv venv --quiet --allow-existing $(CHECKOV_VENV)
	uv pip install --quiet --python $(CHECKOV_VENV)/bin/python "checkov==$(CHECKOV_VERSION)"
	@touch $@

synth: install $(CHECKOV_VENV)/.installed ## CloudFormation for every stack, offline, with cdk-nag, cfn-lint and checkov
	$(BIN)/python -m stacks.synth $(if $(CONFIG),--config $(CONFIG))

openapi: install ## write docs/openapi.json from the route table, the models and the error codes
	$(PY) -m vault.openapi docs/openapi.json

events: install ## write docs/events/*.schema.json from the lifecycle events' models
	$(PY) -m vault.lifecycle docs/events

demo: install ## the whole story on loopback: moto, oidc-provider, vault, sample agent
	$(BIN)/agent-vault local demo

local: install ## start local mode for a real browser (Ctrl-C stops it); CONFIG=my.json PORT=8700
	$(BIN)/agent-vault local up $(if $(CONFIG),--config $(CONFIG)) $(if $(PORT),--port $(PORT))

bench: install ## figures beside same-run floors, a local-mode load run, cost -> bench/latest.json + README
	$(BIN)/python -m bench

fuzz: install ## long fuzzing run of every route
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -n 2 tests/security -k fuzz

deploy: install ## deploy to the AWS account of your credentials (see README)
	npx cdk deploy --all $(if $(CONFIG),-c config=$(CONFIG))

# Exact pins with hashes, no index URL. Packages keep their pinned versions unless an .in file
# changes them (or UPGRADE="--upgrade-package NAME ..." asks); dev.txt for this venv's Python,
# lambda.txt and the agent image's for theirs (3.13), at dev.txt's versions.
requirements: ## recompile requirements/*.txt and agent/requirements.txt from their .in files
	uv pip compile --quiet --generate-hashes --python-version 3.11 $(UPGRADE) \
		requirements/dev.in -o requirements/dev.txt
	uv pip compile --quiet --generate-hashes --python-version 3.13 \
		--python-platform aarch64-manylinux_2_28 -c requirements/dev.txt \
		requirements/lambda.in -o requirements/lambda.txt
	uv pip compile --quiet --generate-hashes --python-version 3.13 -c requirements/dev.txt \
		agent/requirements.in -o agent/requirements.txt

pin-agent-image: ## pin agent/Dockerfile's base image to its tag's current digest (docker, crane or skopeo)
	$(PY) scripts/pin_agent_image.py $(if $(DIGEST),--digest $(DIGEST))

clean: ## remove build outputs
	rm -rf cdk.out build .pytest_cache .mypy_cache .mypy_cache_stacks .ruff_cache .hypothesis
