# The two commands the README opens with: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed

# Two steps: tf-keras and TF-MOT declare a dependency on the `tensorflow` distribution, which would
# pull a second copy of TensorFlow over `tensorflow-cpu`; see requirements-nodeps.txt.
$(VENV)/.installed: setup.cfg pyproject.toml requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
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
