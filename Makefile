# One entry point: `make demo` runs the demo, `make test` runs every test (lab included).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: venv lab test demo lint clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get install -y -q python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -e .
	@touch $@

lab:
	lab/up.sh

test: venv lab
	$(BIN)/pytest -p no:cacheprovider tests

lint: venv
	$(BIN)/ansible-lint --profile production

clean-venv:
	rm -rf $(VENV)
