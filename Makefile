# The two commands of the README: `make run` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default

.PHONY: run test install data notebooks lab clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

## run: install, generate the synthetic datasets, execute every numbered notebook (PROFILE=default)
run: install
	$(PY) -m mecore data generate --profile $(PROFILE)
	$(PY) -m mecore notebooks --profile $(PROFILE)

## test: install, then unit tests and every notebook under nbval in the smoke profile
test: install
	MECORE_PROFILE=smoke $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

data: install
	$(PY) -m mecore data generate --profile $(PROFILE)

lab: install
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf runs cache data/synthetic/smoke
