VENV := .venv
PYTHON ?= python3

.PHONY: demo check test clean gx-bundle readme

# Run the simulator comparison on the built-in scenarios (stock ESS vs the original add-on vs venus-prio).
demo: $(VENV)/.installed
	$(VENV)/bin/venus-prio simulate --scenario all

$(VENV)/.installed: pyproject.toml
	bash .ci/system-deps.sh demo
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e .
	touch $@

# The fast tier for the inner loop (under a minute): lint, types and the unit tests.
check:
	bash .ci/check.sh

# Every check and test, under Python 3.8 and 3.12 side by side.
test:
	bash .ci/test.sh

# The offline Venus OS add-on tarball (package + vendored pure-Python dependencies + daemontools
# service + install.sh) in dist/; pip downloads the dependencies from the package registry.
gx-bundle: $(VENV)/.installed
	$(VENV)/bin/python -m venus_prio.bundle dist

clean:
	rm -rf $(VENV) .venv-* *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Regenerate the README's simulator figures and .github/simulation.png from config.yaml's values.
readme: $(VENV)/.installed
	$(VENV)/bin/python -m pip install -q -e '.[plot]'
	$(VENV)/bin/python -m venus_prio.sim.readme README.md
