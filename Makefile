# The two commands of the README: `make run` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default

.PHONY: run test install data notebooks book lab clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

## install: the venv, and git's clean filter that stores notebooks/*.ipynb without outputs (see .gitattributes)
install: $(VENV)/.installed
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.mecore-notebook.clean '$(PY) -m mecore.notebook_form --filter'; fi

## run: install, generate the synthetic datasets, execute every numbered notebook (PROFILE=default)
run: install
	$(PY) -m mecore data generate --profile $(PROFILE)
	$(PY) -m mecore notebooks --profile $(PROFILE)

## test: install, then unit tests and every notebook under nbval in the smoke profile
test: install
	MECORE_PROFILE=smoke $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

data: install
	$(PY) -m mecore data generate --profile $(PROFILE)

## book: the executed notebooks of runs/notebooks/$(PROFILE)/ as a static HTML site in runs/book/$(PROFILE)/
book: install
	$(PY) -m mecore book --profile $(PROFILE)

lab: install
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf runs cache data/synthetic/smoke
