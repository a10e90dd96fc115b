""" What a checkpoint folder holds, and loading whichever kind it is. """
from pathlib import Path
from typing import Optional, Union

from torch import nn

from ..layers import check_width
from .checkpoint import read_checkpoint_config
from .kinds import ModelKind
from .loading import load
from .model_set import ModelSet, is_model_set_folder

__all__ = ['checkpoint_kind', 'load_any']


def checkpoint_kind(folder: Union[str, Path]) -> ModelKind:
    """The kind of network saved in ``folder``: a ModelSet (``width_*`` member folders), a static sub-model
    (``model_args.width`` in config.json) or a supernet.

    Raises:
        CheckpointError: ``folder`` holds no checkpoint, or an unreadable config.json (named).
    """
    if is_model_set_folder(folder):
        return ModelKind.MODEL_SET
    args = read_checkpoint_config(folder).get('model_args') or {}
    return ModelKind.STATIC if isinstance(args, dict) and args.get('width') is not None else ModelKind.SUPERNET


def load_any(folder: Union[str, Path], width: Optional[float] = None) -> nn.Module:
    """The network saved in ``folder``, whichever kind (``width`` picks one width of a supernet)."""
    if checkpoint_kind(folder) is ModelKind.MODEL_SET:
        model_set = ModelSet.load(folder)
        return model_set if width is None else model_set.member(check_width(width, model_set.widths, 'the model set'))
    return load(folder, width=width)
