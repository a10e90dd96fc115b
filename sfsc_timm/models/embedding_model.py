"""The embedding model of one width, from anything ``sfsc_timm.load`` loads or from a network in memory.

It lives with the loader, below every command that needs it (``sfsc-timm embed``, ``sfsc-timm export-width``);
``sfsc_timm.inference.load_embedding_model`` is this function."""
import copy
from pathlib import Path
from typing import Optional, Union

from torch import nn

from ..layers import check_width
from .checkpoint_io import load, resolve_source
from .embedding_net import SwitchableEmbeddingNet
from .extract import extract
from .model_set import ModelSet

__all__ = ['load_embedding_model']


def load_embedding_model(source: Union[str, Path, nn.Module], width: Optional[float] = None) -> nn.Module:
    """The static sub-model at ``width`` without its classifier, in eval mode: ``model(images)`` is the (B, D)
    embedding (not normalised).

    Args:
        source: anything ``sfsc_timm.load`` takes (``hf-hub:ORG/NAME``, ``local-dir:FOLDER``, a checkpoint folder, a
            run folder (its ``export/``), a baseline's folder of per-width models, a registered ``sfsc_*`` name with
            its pretrained weights; docs/loading.md), or a network in memory (supernet, static sub-model or model
            set; it is not modified).
        width: one of the checkpoint's widths; default: the full width of a supernet, the only width of a static one.

    Raises:
        ValueError: a width the checkpoint has no weights for (the message names the available ones), a checkpoint
            that does not fit.
        CheckpointNotFoundError: (a FileNotFoundError) no checkpoint at ``source``.
    """
    width = None if width is None else check_width(width)
    model = _from_module(source, width) if isinstance(source, nn.Module) else _from_source(source, width)
    model.reset_classifier(0)
    return model.eval()


def _from_module(net: nn.Module, width: Optional[float]) -> nn.Module:
    if isinstance(net, SwitchableEmbeddingNet):
        return extract(net, 1.0 if width is None else width)
    if isinstance(net, ModelSet):
        return copy.deepcopy(net.member(1.0 if width is None else width))
    if not hasattr(net, 'active_width'):  # e.g. a plain timm model: no width, no embedding head of ours
        raise TypeError(f'{type(net).__name__} is not an sfsc_timm network (a supernet, a static sub-model or a '
                        "baseline's model set); build one with timm.create_model('sfsc_...') or load one with "
                        'sfsc_timm.load(FOLDER).')
    if width is not None and width != net.active_width:
        raise ValueError(f'the model is the static sub-model at width {net.active_width}; it has no width {width}.')
    return copy.deepcopy(net)


def _from_source(source: Union[str, Path], width: Optional[float]) -> nn.Module:
    where = resolve_source(source)
    # one width is loaded, reading only its slices: a supernet's (or model set's) full width, or a static one's own
    return load(where, width if width is not None else where.saved_width() or 1.0)
