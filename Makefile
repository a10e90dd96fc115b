# Set-up and the two jobs of the README. `make run` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install data glyphs run demo test test-slow bench

install: $(VENV)/.installed

# torch/torchvision come from constraints.txt: the versions tested here (docs/design.md, "Environment")
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,index]'
	touch $@

# Fashion-MNIST, and the typefaces the glyph re-identification benchmark renders (docs/open_set.md)
data: $(FASHION_MNIST) glyphs

GLYPH_FONTS := fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei fonts-wqy-microhei \
	fonts-ipafont-gothic fonts-ipafont-mincho fonts-droid-fallback

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

glyphs:
	@dpkg -s $(GLYPH_FONTS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends $(GLYPH_FONTS); }

# the main job: train the built-in default recipe (Fashion-MNIST), then print the compatibility matrix
run: install data
	$(BIN)/sfsc-timm train -c recipes/sfsc_resnet18_fashion_mnist.yaml

demo: install
	$(BIN)/sfsc-timm demo

# the default tier covers every public behaviour; the slow tier (multi-process, the wheel, long trainings) runs in CI too
test: install data
	$(BIN)/python -m pytest -q -m 'not slow'

test-slow: install data
	$(BIN)/python -m pytest -q -m slow

# the CPU speed and memory benchmarks that take minutes, each printing its ratio against its target (benchmarks/README.md)
bench: install
	$(BIN)/python benchmarks/perf/inference.py
	$(BIN)/python benchmarks/perf/eval.py
	$(BIN)/python benchmarks/perf/train_step.py
