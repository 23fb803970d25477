# The README's commands. Every target sets up .venv itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: setup demo test bench lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Pre-train configs/gpt_mini.py on the built-in corpus, then generate from it.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/tflm train --config=configs/gpt_mini.py --workdir=$(DEMO_DIR)
	$(VENV)/bin/tflm generate --model=$(DEMO_DIR)/model --max_new_tokens=40 \
		--sampler=top_p --top_p=0.9 --temperature=0.8 \
		--prompt="The" --prompt="A function" --prompt="Return the"

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m 'not slow'

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check tflm tests configs benchmarks export

clean:
	rm -rf $(VENV) runs build *.egg-info
