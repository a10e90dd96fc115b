# Set-up and the two jobs of the README. `make run` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install data run demo test bench

install: $(VENV)/.installed

# torch/torchvision come from constraints.txt: the versions tested here (docs/design.md, "Environment")
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# the main job: train the built-in default recipe (Fashion-MNIST), then print the compatibility matrix
run: install data
	$(BIN)/sfsc-timm train -c recipes/sfsc_resnet18_fashion_mnist.yaml

demo: install
	$(BIN)/sfsc-timm demo

test: install data
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/eval.py
	$(BIN)/python benchmarks/train_step.py
