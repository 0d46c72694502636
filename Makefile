# Everything sets itself up in a local virtual environment (.venv): no prior install needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench reproduce clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The main job on the shipped default (configs/one_pixel.py:demo): a 3-pixel DE attack
# (population 400, 100 generations, SciPy's best1bin) on 24 correctly classified bundled
# CIFAR-10 test images against the shipped Hyperparticle LeNet, with live progress.
# Figures, records and results.json go to runs/demo; about 20 s on 2 CPU cores after set-up.
demo: $(STAMP)
	$(PY) experiments/one_pixel.py --config=configs/one_pixel.py:demo --workdir runs/demo

# Two workers (pytest-xdist), each test file on one: most of the suite's time is compiling,
# which XLA does on one core.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

# The one-pixel programme of issue 26 (train the paper's nets, the paper's attacks, the Keras
# reimplementation's twelve cells, summary.md): hours on a CPU, resumable -- rerun to continue.
# results/reproduce holds the project's own runs (committed as they grow): only what is
# missing there runs.
reproduce: $(STAMP)
	$(PY) experiments/reproduce.py --workdir results/reproduce

bench: $(STAMP)
	$(PY) benchmarks/throughput.py --out runs/throughput.json

clean:
	rm -rf $(VENV) runs build *.egg-info
