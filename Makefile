# One quality gate for people, the before-stop hook and CI (.ci/run calls `make check`).
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install check lint typecheck test demo bench chaos lock

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml devtools/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# The developer tools (devtools/pyproject.toml): a checkout's, never the wheel's.
	$(PY) -m pip install --quiet --no-build-isolation -e ./devtools
	touch $@

lint: install
	ruff check bridge jobs devtools tests
	ruff format --check bridge jobs devtools tests
	lint-imports

typecheck: install
	mypy

# Four workers on two cores: the tests mostly wait on their servers (redis-server, the
# sandbox, uvicorn, PostgreSQL), each its own, so they share nothing but the CPU.
test: install
	pytest -q -n 4

check: lint typecheck test

# The developer tools (devtools/, installed editable beside the bridge; not in the image).
demo: install
	$(VENV)/bin/cryptolens-bridge dev --demo

bench: install
	$(VENV)/bin/cryptolens-bridge bench

chaos: install
	$(VENV)/bin/cryptolens-bridge chaos

# The image's pinned dependencies (versions and hashes) from pyproject.toml; commit the result.
lock: install
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
