# Everything sets itself up in a local virtual environment (.venv): no prior install needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The main job on the shipped default: evaluate the shipped nets on the bundled samples, then
# the paper's one-pixel attack (population 400, 100 generations) on 100 bundled CIFAR-10 images
# against the shipped Hyperparticle LeNet. Figures and results.json go to runs/demo.
demo: $(STAMP)
	$(PY) experiments/evaluate.py
	$(PY) experiments/one_pixel.py --model cifar10_lenet_hyperparticle --data cifar10_samples \
	    --num_images 100 --pixels 1 --workdir runs/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) experiments/benchmark.py --workdir runs/benchmark

clean:
	rm -rf $(VENV) runs build *.egg-info
