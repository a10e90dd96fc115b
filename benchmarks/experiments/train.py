""" ``sfsc-timm train`` with the tables' presets registered (benchmarks/experiments/methods.py): what the paper table
runs, e.g. ``python benchmarks/experiments/train.py -c recipes/sfsc_resnet18_fashion_mnist.yaml --method sfsc_exp``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks.experiments`

import benchmarks.experiments.methods  # noqa: E402,F401  (registers the presets)
from sfsc_timm.train.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
