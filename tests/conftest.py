import sys
from pathlib import Path

import pytest
import timm
import torch

import sfsc_timm  # noqa: F401  (registers the models)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks`
import benchmarks.experiments.methods  # noqa: E402,F401  (the tables' presets, which tests train as well)

SMALL_INPUT = (2, 3, 64, 32)
SMALL_WIDTHS = (0.25, 0.5, 1.0)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def small_net():
    """A trained-looking sfsc_resnet18 supernet: random weights, BatchNorm statistics moved away from init."""
    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=7, widths=SMALL_WIDTHS, embed_dim=96)
    net.train()
    with torch.no_grad():
        for width in net.widths:
            with net.width(width):
                net(torch.randn(*SMALL_INPUT) * 2 + 0.5)  # running stats differ per width
    return net.eval()


@pytest.fixture(scope='session')
def saved_net(small_net, tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpt') / 'sfsc_resnet18'
    sfsc_timm.save(small_net, folder)
    return folder
