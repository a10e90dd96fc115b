""" Every training method, registered: importing this module imports each module that defines methods. """
from torch import nn

from . import baselines, steps  # noqa: F401  (each registers its methods)
from .distributed import DistInfo
from .registry import METHODS
from .steps import TrainStep

__all__ = ['METHODS', 'create_train_step']


def create_train_step(cfg, net: nn.Module, dist_info: DistInfo) -> TrainStep:
    """The step object of ``cfg.method``."""
    if cfg.method not in METHODS:
        raise ValueError(f'unknown method {cfg.method!r}; available: {", ".join(sorted(METHODS))}.')
    return METHODS[cfg.method](net, cfg, dist_info)
