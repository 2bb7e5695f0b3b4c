VENV := .venv
PYTHON ?= python3

.PHONY: demo test clean

# Run the simulator comparison on the built-in scenarios (stock ESS vs the original add-on vs venus-prio).
demo: $(VENV)/.installed
	$(VENV)/bin/venus-prio simulate --scenario all

$(VENV)/.installed: pyproject.toml
	bash .ci/system-deps.sh demo
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e .
	touch $@

# Every check and test, under Python 3.8 and 3.12.
test:
	bash .ci/test.sh

clean:
	rm -rf $(VENV) .venv-* *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
