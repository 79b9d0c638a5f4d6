# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo serve test test-slow lint install data train-default bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DUBAI ?= ../shared/data/dubai-aerial

# The main job: build the two datasets our builder makes (synthetic scenes, and the CC0 Dubai tiles
# when ../shared is present), draw a preview, then segment the bundled samples with the shipped model;
# `rrsis serve` then shows the same in a browser page.
demo: $(STAMP)
	$(VENV)/bin/rrsis data synth demo_out/synth --n 200 --seed 0 --overwrite
	$(VENV)/bin/rrsis data stats demo_out/synth
	@if [ -d "$(DUBAI)" ]; then \
		$(VENV)/bin/rrsis data dubai "$(DUBAI)" demo_out/dubai --overwrite && \
		$(VENV)/bin/rrsis data stats demo_out/dubai && \
		$(VENV)/bin/rrsis data show demo_out/dubai "$$(head -n1 demo_out/dubai/output_phrase_test.txt | cut -d' ' -f1)" \
			-o demo_out/dubai_preview.png --overwrite; \
	else echo "$(DUBAI) not found: skipping the Dubai conversion"; fi
	$(VENV)/bin/rrsis demo --out demo_out/segment
	@echo "Next: make serve   (rrsis serve: a local page at http://127.0.0.1:8000/: open an image, type expressions, see the masks on a map)"

serve: $(STAMP)
	$(VENV)/bin/rrsis serve

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

train-default: $(STAMP)
	$(PY) scripts/train_default.py --epochs 8

bench: $(STAMP)
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
