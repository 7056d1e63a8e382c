# The two commands the README opens with: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed

# Development installs everything (core, `compile` extra, `test` extra), with the compile extra
# taken apart: tf-keras and TF-MOT declare a dependency on the `tensorflow` distribution, so
# `pip install '.[compile]'` installs that wheel (right for users: it resolves cleanly everywhere);
# here the tensorflow-cpu wheel (274 MB against 572 MB) provides the same module, and tf-keras
# and TF-MOT go in with --no-deps (requirements-nodeps.txt). `compile-support` is the rest of the
# extra. Off x86-64 Linux (no tensorflow-cpu wheel there) it is the `tensorflow` wheel.
TENSORFLOW ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),tensorflow-cpu,tensorflow)==2.21.*

$(VENV)/.installed: setup.cfg pyproject.toml requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,compile-support]' '$(TENSORFLOW)'
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

demo: venv
	$(PY) -m tflc.examples.digits build/digits
	$(VENV)/bin/tflc compile build/digits/model.keras -o build/digits/out \
		--calibration-data build/digits/calib.npz --eval-data build/digits/eval.npz \
		--max-accuracy-drop 1.0

test: venv
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check tflc tests benchmarks

clean:
	rm -rf build .pytest_cache
