"""Checkpoint I/O: one safetensors file per supernet, read slice by slice, written atomically."""
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from torch import nn

from ..layers import key_width

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
_PER_WIDTH_KEY = re.compile(r'\.per_width\.(\d+(?:_\d+)?)\.')


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into (or cannot be read at all)."""


def widths_in_keys(keys) -> Tuple[float, ...]:
    """Widths a supernet checkpoint has BatchNorm statistics for: each ``per_width`` key, plus the full width."""
    found = {key_width(m.group(1)) for key in keys for m in [_PER_WIDTH_KEY.search(key)] if m}
    return tuple(sorted(found | {1.0}))


class CheckpointReader:
    """Reads tensors, or leading slices of them, from a safetensors file without loading the whole file.

    Use as a context manager; the file is memory-mapped, so a slice touches only the pages it covers.
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f'Checkpoint {self.path} does not exist. Save one with sfsc_timm.save(net, folder) or '
                f'timm.models.save_for_hf(net, folder, safe_serialization=True).')
        if self.path.suffix != '.safetensors':
            raise CheckpointError(
                f'{self.path} is not a .safetensors file. sfsc_timm only loads safetensors checkpoints (pickled '
                'files can run code); convert it with sfsc_timm.save(net, folder).')
        try:
            self._file = safe_open(str(self.path), framework='pt', device='cpu')
            self._keys = tuple(self._file.keys())
        except Exception as e:  # safetensors raises its own error types for bad headers and short files
            raise CheckpointError(
                f'{self.path} is not a readable safetensors file ({e}); it is truncated or corrupt. Download or '
                'export it again.') from e

    def __enter__(self) -> 'CheckpointReader':
        return self

    def __exit__(self, *exc) -> None:
        self._file = None

    def keys(self) -> Tuple[str, ...]:
        return self._keys

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

    def read(self, key: str, index: Tuple[slice, ...] = ()) -> torch.Tensor:
        """The tensor stored under ``key``, or only ``tensor[index]`` (read without touching the rest)."""
        try:
            tensor = self._file.get_slice(key)[index] if index else self._file.get_tensor(key)
        except Exception as e:
            raise CheckpointError(f'Cannot read {key} from {self.path} ({e}); the file is truncated or corrupt.') from e
        return tensor.contiguous()


def resolve_weights_file(pretrained_cfg: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Local path of the safetensors weights a timm ``pretrained_cfg`` points at (downloading from the Hub if needed).

    Follows timm's precedence: an explicit ``hf-hub`` / ``local-dir`` source, then ``file``, then ``hf_hub_id``.
    """
    source = pretrained_cfg.get('source') or ''
    file = pretrained_cfg.get('file')
    hub_id = pretrained_cfg.get('hf_hub_id')
    if source == 'local-dir' or (source != 'hf-hub' and file):
        location = Path(file)
        if location.is_dir():
            weights = location / WEIGHTS_NAME
            if not weights.is_file():
                others = sorted(p.name for p in location.glob('*.bin')) + sorted(p.name for p in location.glob('*.pth'))
                hint = f' It holds {others}: pickled weights are not loaded, re-save them with sfsc_timm.save.' \
                    if others else ''
                raise FileNotFoundError(f'No {WEIGHTS_NAME} in {location}.{hint} Export the supernet with '
                                        'sfsc_timm.save(net, folder).')
            return weights
        return location
    if hub_id:
        from huggingface_hub import hf_hub_download
        repo_id, _, revision = hub_id.partition('@')
        return Path(hf_hub_download(repo_id, pretrained_cfg.get('hf_hub_filename') or WEIGHTS_NAME,
                                    revision=revision or None, cache_dir=cache_dir))
    name = pretrained_cfg.get('architecture', 'this model')
    raise RuntimeError(
        f'No pretrained weights are registered for {name}. Load a trained checkpoint with '
        f"timm.create_model('local-dir:FOLDER', ...), timm.create_model('hf-hub:ORG/NAME', ...) or "
        f"timm.create_model('{name}', pretrained=True, pretrained_cfg_overlay=dict(file='FOLDER/{WEIGHTS_NAME}')).")


def save(net: nn.Module, path: Union[str, Path], model_args: Optional[Dict[str, Any]] = None) -> Path:
    """Save ``net`` as a timm checkpoint folder (``model.safetensors`` + ``config.json``), atomically.

    The layout is exactly ``timm.models.save_for_hf(net, path, safe_serialization=True)``'s, with the arguments that
    rebuild the network (widths, embed_dim, num_classes, and width for a static sub-model) in ``model_args``. The
    folder is written next to ``path`` and swapped in only when complete, so an existing good checkpoint is never
    half-overwritten.

    Returns:
        The checkpoint folder.
    """
    from timm.models import save_for_hf
    path = Path(path)
    if not getattr(net, 'pretrained_cfg', None) or not net.pretrained_cfg.get('architecture'):
        raise ValueError('The network has no pretrained_cfg naming its architecture; build it with '
                         "timm.create_model('sfsc_resnet50', ...) (or another registered sfsc_* model).")
    args = dict(model_args or {})
    args.update(sfsc_model_args(net))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', dir=path.parent))
    try:
        save_for_hf(net, staging, model_args=args, safe_serialization=True)
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def replace_folder(new: Path, target: Path) -> None:
    """Move the complete folder ``new`` to ``target``; an existing ``target`` is replaced only after ``new`` is whole."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f'.{target.name}.old.', dir=target.parent))
        os.replace(target, retired / target.name)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(retired / target.name, target)  # put the good one back
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(new, target)


def sfsc_model_args(net: nn.Module) -> Dict[str, Any]:
    """The constructor arguments that rebuild ``net`` from its checkpoint."""
    args = dict(embed_dim=net.embed_dim, num_classes=net.num_classes, in_chans=net.in_chans,
                widths=list(getattr(net, 'widths', None) or getattr(net, 'source_widths')))
    if not hasattr(net, 'set_width'):  # a static sub-model: its checkpoint holds one width only
        args['width'] = net.active_width
    return args


def describe_shapes(items: Sequence[Tuple[str, Tuple[int, ...], Tuple[int, ...]]], limit: int = 3) -> str:
    shown = ', '.join(f'{k}: checkpoint {tuple(a)} vs model {tuple(b)}' for k, a, b in items[:limit])
    return shown + (f' (+{len(items) - limit} more)' if len(items) > limit else '')
