# The two set-up commands of the README.
VENV ?= .venv

.PHONY: setup demo test dev

setup:
	tools/setup.sh

# Installs everything, then runs the whole job on the built-in example.
demo: setup
	$(VENV)/bin/edgeslim example --target rpi4 --out out

# Installs everything, then runs every test.
test: setup
	$(VENV)/bin/pytest -q --timeout=900

dev:
	tools/setup.sh --editable
