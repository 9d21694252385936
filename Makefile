# Two commands for a fresh machine: `make demo` (the pipeline on the built-in shapes data, with the shipped DAMSM
# encoders; `make demo-full` pre-trains them too) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: env demo demo-full demo-picture test bench clean-demo

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

env: $(BIN)/.installed

demo: env
	$(BIN)/python -m tools.demo

demo-full: env  # the DAMSM pre-training too (its generator goes to output/demo/attngan_rnn_own_damsm)
	$(BIN)/python -m tools.demo --train_damsm

test: env
	$(BIN)/python -m pytest -q tests

bench: env
	$(BIN)/python -m bench.run_all

demo-picture:  # the newest demo report's captioned sample grid -> docs/demo_samples.png (the README's picture)
	cp "$$(ls -t output/demo/*/Model/*/valid/samples.png | head -1)" docs/demo_samples.png

clean-demo:
	rm -rf data/shapes output/demo
