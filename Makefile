# fraudstream: every target README and CI use, as-is.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install tools demo test soak lint format typecheck bench image clean

help: ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,replay]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install fraudstream with dev extras

demo: $(STAMP) ## embedded broker, simulate, train, run the flow, print a summary
	$(BIN)/fraudstream demo

lint: $(STAMP) ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fraudstream/ state/ models/ flows/ replay/

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

tools: ## promtool + prometheus for the alert-rule tests (Debian package, apt-get) if missing
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || \
	deploy/prometheus/install-tools.sh || \
	case "$${CI:-}$${FRAUDSTREAM_REQUIRE_TOOLS:-}" in \
	  ""|0|false|no) echo "make tools: no promtool/prometheus: their tests will skip" >&2 ;; \
	  *) exit 1 ;; \
	esac

test: lint tools ## lint, then the whole test suite (embedded broker, Prometheus included)
	$(BIN)/pytest -q

soak: $(STAMP) ## long runs: fault campaign (~100k events, 16 faults; report in var/soak), drift at scale
	$(BIN)/python -m tests.faults.campaign --soak --workdir var/soak
	$(BIN)/pytest -q --soak -m soak

bench: $(STAMP) ## benchmarks (outside the tests), results in benchmarks/results/latest.jsonl
	$(BIN)/python -m benchmarks.run

image: ## container image with buildah, podman or docker (options: deploy/build-image.sh)
	deploy/build-image.sh

clean: ## remove the venv and local run data
	rm -rf $(VENV) var demo-data .pytest_cache .mypy_cache .ruff_cache
