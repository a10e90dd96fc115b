"""Where ``pretrained=True`` finds its weights: timm's precedence over the pretrained_cfg, downloads through timm.

The location is resolved as ``timm.models.load_pretrained`` resolves it (an explicit ``hf-hub`` or ``local-dir``
source, then ``state_dict``, ``file``, ``hf_hub_id`` and ``url``), so ``pretrained_cfg_overlay=dict(file=...)`` means
what it means for any timm model. Only the file is fetched here; what it holds (an SFSC checkpoint or a plain timm
one) is decided by its keys (``sfsc_timm.models.imagenet_init``).
"""
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from timm.models._builder import _resolve_pretrained_source
from timm.models._hub import download_cached_file, download_from_hf

from ..errors import RunError
from .checkpoint import WEIGHTS_NAME

Weights = Union[Path, Dict[str, torch.Tensor]]


class WeightsUnavailableError(RunError):
    """The weights are on the Hub, which cannot be reached, and not in the local cache."""


def resolve_weights(pretrained_cfg: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> Weights:
    """The local weights file a timm ``pretrained_cfg`` points at (downloaded through timm if needed), or the state
    dict it holds under ``state_dict``.

    Raises:
        WeightsUnavailableError: the Hub cannot be reached and the file is not cached; names the Hub id and how to
            pass a local file instead.
        FileNotFoundError: a folder without ``model.safetensors``.
        RuntimeError: the cfg names no location at all.
    """
    load_from, location = _resolve_pretrained_source(pretrained_cfg)
    if load_from == 'state_dict':
        return location
    if load_from in ('file', 'local-dir'):
        return _local_weights(Path(location))
    if load_from == 'hf-hub':
        hub_id, filename = location if isinstance(location, (tuple, list)) else (location, WEIGHTS_NAME)
        return _download(pretrained_cfg, hub_id, filename, cache_dir)
    if load_from == 'url':
        return Path(download_cached_file(location, check_hash=True, cache_dir=cache_dir))
    name = pretrained_cfg.get('architecture', 'this model')
    raise RuntimeError(
        f'No pretrained weights are registered for {name}. Load a trained checkpoint with '
        f"timm.create_model('local-dir:FOLDER', ...), timm.create_model('hf-hub:ORG/NAME', ...) or "
        f"timm.create_model('{name}', pretrained=True, pretrained_cfg_overlay=dict(file='FOLDER/{WEIGHTS_NAME}')).")


PICKLED_SUFFIXES = ('.bin', '.pth', '.pt', '.ckpt', '.pkl')


def pickled_weights_hint(folder: Path) -> str:
    """`` It holds pytorch_model.bin: ...`` when ``folder`` holds pickled weight files, else ``''``."""
    found = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES and p.is_file()) \
        if folder.is_dir() else []
    if not found:
        return ''
    return (f' It holds {", ".join(found[:3])}: pickled weights are never loaded (unpickling can run code); load them '
            f'in a process you trust and write {WEIGHTS_NAME} with sfsc_timm.save(net, folder).')


def _local_weights(location: Path) -> Path:
    if not location.is_dir():
        return location
    weights = location / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f'No {WEIGHTS_NAME} in {location}.{pickled_weights_hint(location)} Export the '
                                'supernet with sfsc_timm.save(net, folder).')
    return weights


def _download(pretrained_cfg: Dict[str, Any], hub_id: str, filename: str,
              cache_dir: Optional[Union[str, Path]]) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(download_from_hf(hub_id, filename, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        name = pretrained_cfg.get('architecture', 'the model')
        cache = cache_dir or constants.HF_HUB_CACHE
        reason = 'HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else 'no connection'
        raise WeightsUnavailableError(
            f'Cannot get the pretrained weights of {name}: {filename} of the Hugging Face Hub repository {hub_id} is '
            f'not in the local cache ({cache}) and the Hub cannot be reached ({reason}). Download it once where the '
            f'Hub is reachable, or pass a local copy: timm.create_model(\'{name}\', pretrained=True, '
            f'pretrained_cfg_overlay=dict(file=\'PATH/{filename}\')), or in a recipe pretrained_file: '
            f'PATH/{filename}.') from e
