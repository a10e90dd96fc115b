"""The embedding model of one width, from anything ``timm.create_model`` loads or from a network in memory."""
import copy
import json
from pathlib import Path
from typing import Optional, Union

import timm
from torch import nn

from ..layers import check_width, width_key
from ..models import ModelSet, SwitchableEmbeddingNet, extract, is_model_set_folder
from ..models.checkpoint import CONFIG_NAME
from ..models.model_set import MEMBER_PREFIX

__all__ = ['load_embedding_model']


def load_embedding_model(source: Union[str, Path, nn.Module], width: Optional[float] = None) -> nn.Module:
    """The static sub-model at ``width`` without its classifier, in eval mode: ``model(images)`` is the (B, D)
    embedding (not normalised).

    Args:
        source: ``hf-hub:ORG/NAME``, ``local-dir:FOLDER``, a checkpoint folder, a run folder (its ``export/``), a
            baseline's folder of per-width models, a registered ``sfsc_*`` name (with its pretrained weights), or a
            network in memory (supernet, static sub-model or model set; it is not modified).
        width: one of the checkpoint's widths; default: the full width of a supernet, the only width of a static one.

    Raises:
        ValueError: a width the checkpoint has no weights for (the message names the available ones), a checkpoint
            that does not fit.
        FileNotFoundError: a local path that does not exist.
    """
    width = None if width is None else check_width(width)
    model = _from_module(source, width) if isinstance(source, nn.Module) else _from_location(str(source), width)
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


def _from_location(source: str, width: Optional[float]) -> nn.Module:
    from ..hub.run_folder import ExportError, find_checkpoint_folder  # late: sfsc_timm.hub imports this module

    if source.startswith(('hf-hub:', 'hf_hub:', 'local-dir:')):
        location = source
    elif Path(source).exists():
        folder = Path(source)
        for candidate in (folder, folder / 'export'):
            if candidate.is_dir() and is_model_set_folder(candidate):  # a baseline: one checkpoint per width
                member = candidate / f'{MEMBER_PREFIX}{width_key(1.0 if width is None else width)}'
                if not member.is_dir():
                    raise ValueError(f'{candidate} has no model of width {width}; it has '
                                     f'{sorted(p.name for p in candidate.glob(MEMBER_PREFIX + "*"))}.')
                folder = member
                break
        location = f'local-dir:{find_checkpoint_folder(folder)}'
    elif source.count('/') == 1 and not source.startswith(('.', '/', '~')):
        raise ExportError(f'{source} is not a local folder. For a Hub repository write hf-hub:{source}.')
    elif timm.is_model(source) and source.startswith('sfsc_'):
        return timm.create_model(source, pretrained=True, width=1.0 if width is None else width)
    else:
        raise FileNotFoundError(f'{source} is neither a folder nor a registered sfsc_* model; pass a checkpoint or '
                                'run folder, local-dir:FOLDER, hf-hub:ORG/NAME or a model name.')
    if width is None:
        width = _saved_width(location)
    return timm.create_model(location, pretrained=True, width=width)


def _saved_width(location: str) -> float:
    """The width of a static sub-model checkpoint, 1.0 (the full width) for a supernet."""
    if location.startswith('local-dir:'):
        config_path = Path(location.removeprefix('local-dir:')) / CONFIG_NAME
    else:
        from huggingface_hub import hf_hub_download  # the file timm downloads to build the model
        repo_id, _, revision = location.split(':', 1)[1].partition('@')
        config_path = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision or None))
    config = json.loads(config_path.read_text())
    return float((config.get('model_args') or {}).get('width', 1.0))
