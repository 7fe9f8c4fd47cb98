# `make demo` and `make test` work on a fresh clone: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_INSTALL := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: venv demo test test-ray bench install-size lint docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev,all,docs]'
	# the NIR export presets are tested against these readers; their metadata pulls torchvision
	$(PIP_INSTALL) --no-deps 'spikingjelly>=2.0' 'norse>=1.1'
	@touch $(STAMP)

demo: venv
	$(BIN)/spikequant demo

test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not ray"

# The study executor on a real local Ray instance (the ray extra is a large install, so it is
# kept out of `make test`; there a stand-in module checks the scheduling).
test-ray: venv
	$(PIP_INSTALL) -e '.[dev,all,docs,ray]'
	$(BIN)/python -m pytest -q -m ray

bench: venv
	$(PIP_INSTALL) -e '.[dev,all,docs,bench]'
	$(PIP_INSTALL) --no-deps 'spikingjelly>=0.0.0.0.14' 'norse>=1.0'
	$(BIN)/python -m benchmarks.run

# disk taken by a fresh core install and by one with every extra: docs/results/install_size.md
install-size: venv
	$(BIN)/python -m benchmarks.install_size

# The documentation site, into site/ (gitignored); any warning fails the build.
docs: venv
	$(BIN)/mkdocs build --strict --site-dir site

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) site build *.egg-info src/*.egg-info
