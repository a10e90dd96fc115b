"""Checkpoint I/O: one safetensors file per supernet, read slice by slice, written atomically."""
import json
import math
import os
import struct
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from torch import nn

# replace_folder: the name others import
from ..atomic_io import check_destination, replace_folder, staged_folder  # noqa: F401
from ..layers import key_width
from .kinds import ModelKind, model_kind
from .last_stride import DEFAULT_LAST_STRIDE


WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME)  # the whole file set save writes
_PER_WIDTH_KEY = re.compile(r'\.per_width\.(\d+(?:_\d+)?)\.')


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into (or cannot be read at all)."""


def widths_in_keys(keys) -> Tuple[float, ...]:
    """Widths a supernet checkpoint has BatchNorm statistics for: each ``per_width`` key, plus the full width."""
    found = {key_width(m.group(1)) for key in keys for m in [_PER_WIDTH_KEY.search(key)] if m}
    return tuple(sorted(found | {1.0}))


_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16, 'I64': torch.int64,
    'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool,
}


class CheckpointReader:
    """Reads tensors, or leading slices of them, from a safetensors file without loading the whole file.

    ``safe_open`` validates the file (header, declared sizes against the file length). Tensors are then read with
    positioned reads of exactly the bytes a slice covers: a memory-mapped ``get_slice`` would also map the pages
    around every row it touches (the kernel's fault-around), which on a cached file made loading width 0.25 cost
    about a third of loading the full width instead of a tenth (benchmarks/perf/inference.py).
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
            with safe_open(str(self.path), framework='pt', device='cpu') as f:
                self._keys = tuple(f.keys())
            self._fd = os.open(self.path, os.O_RDONLY)
            (header_size,) = struct.unpack('<Q', os.pread(self._fd, 8, 0))
            self._header = json.loads(os.pread(self._fd, header_size, 8))
            self._data_start = 8 + header_size
        except Exception as e:  # safetensors raises its own error types for bad headers and short files
            raise CheckpointError(
                f'{self.path} is not a readable safetensors file ({e}); it is truncated or corrupt. Download or '
                'export it again.') from e

    def __enter__(self) -> 'CheckpointReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, '_fd', None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

    def keys(self) -> Tuple[str, ...]:
        return self._keys

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self._header[key]['shape'])

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype of ``key``.

        Raises:
            CheckpointError: a dtype this reader does not know (the header was altered).
        """
        name = self._header[key]['dtype']
        if name not in _DTYPES:
            raise CheckpointError(f'{self.path}: tensor {key} has dtype {name!r}, which sfsc_timm never writes; the '
                                  'file is corrupt. Save or download it again.')
        return _DTYPES[name]

    def read(self, key: str, index: Tuple[slice, ...] = ()) -> torch.Tensor:
        """The tensor stored under ``key``, or only ``tensor[index]`` for leading slices ``slice(0, n)`` of its
        first dimensions, reading just those bytes."""
        entry = self._header[key]
        dtype, shape = _DTYPES[entry['dtype']], list(entry['shape'])
        begin = self._data_start + entry['data_offsets'][0]
        item = torch.empty((), dtype=dtype).element_size()
        if len(index) > 2 or any(s.start not in (None, 0) or s.step not in (None, 1) for s in index):
            raise ValueError(f'only leading slices of the first two dimensions are read, got {index}.')
        counts = [len(range(*s.indices(shape[d]))) for d, s in enumerate(index)]
        if len(counts) == 2 and counts[1] == shape[1]:
            counts = counts[:1]  # whole rows: one contiguous block
        inner = math.prod(shape[len(counts):]) * item  # bytes of one element of the sliced dimension
        out_shape = counts + shape[len(counts):]
        buffer = bytearray(math.prod(out_shape) * item)
        try:
            if len(counts) < 2:  # a block of leading rows (or the whole tensor)
                self._pread_into(buffer, 0, begin, len(buffer))
            else:  # the leading part of each of the leading rows
                row, chunk = shape[1] * inner, counts[1] * inner
                for r in range(counts[0]):
                    self._pread_into(buffer, r * chunk, begin + r * row, chunk)
        except OSError as e:
            raise CheckpointError(f'Cannot read {key} from {self.path} ({e}); the file is truncated or corrupt.') from e
        if not buffer:
            return torch.empty(out_shape, dtype=dtype)
        tensor = torch.frombuffer(buffer, dtype=dtype).reshape(out_shape)
        # refused where it enters: a NaN weight would only show as NaN embeddings far downstream
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f'{self.path}: tensor {key} holds non-finite values (NaN or inf); the weights are '
                                  'corrupt or come from a diverged run. Load an earlier checkpoint or train again.')
        return tensor

    def _pread_into(self, buffer: bytearray, at: int, offset: int, size: int) -> None:
        view = memoryview(buffer)[at:at + size]
        while size:
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(f'unexpected end of file at byte {offset}')
            view, offset, size = view[got:], offset + got, size - got


def save(net: nn.Module, path: Union[str, Path], model_args: Optional[Dict[str, Any]] = None, *,
         force: bool = False) -> Path:
    """Save ``net`` as a timm checkpoint folder (``model.safetensors`` + ``config.json``), atomically.

    The layout is exactly ``timm.models.save_for_hf(net, path, safe_serialization=True)``'s, with the arguments that
    rebuild the network (widths, embed_dim, and width for a static sub-model) in ``model_args``; no key of
    config.json is repeated (see :func:`tidy_config`), and the class names in ``pretrained_cfg['label_names']``, if
    any, are written as ``label_names``. The folder is written next to ``path`` and swapped in only when complete, so
    an existing good checkpoint is never half-overwritten. A folder holding anything but a checkpoint's two files
    (a folder of photos, say), or a plain file, is refused unless ``force``.

    Returns:
        The checkpoint folder.

    Raises:
        DestinationInUse: ``path`` is a file, or a folder holding files a checkpoint does not have.
    """
    from timm.models import save_for_hf
    path = Path(path)
    if not getattr(net, 'pretrained_cfg', None) or not net.pretrained_cfg.get('architecture'):
        raise ValueError('The network has no pretrained_cfg naming its architecture; build it with '
                         "timm.create_model('sfsc_resnet50', ...) (or another registered sfsc_* model).")
    check_finite_weights(net, f'sfsc_timm.save({str(path)!r})')
    check_destination(path, CHECKPOINT_FILES, folder=True, force=force,
                      fix='save into a new or empty folder, or pass force=True to replace it')
    args = dict(model_args or {})
    args.update(sfsc_model_args(net))
    with staged_folder(path) as staging:
        save_for_hf(net, staging, model_args=args, model_config=_label_config(net), safe_serialization=True)
        tidy_config(staging / CONFIG_NAME)
    return path


def check_finite_weights(net: nn.Module, where: str) -> None:
    """Refuse a network whose parameters or buffers hold NaN or inf (a diverged run): it would write a checkpoint
    every load then refuses, or embeddings that are all NaN.

    Raises:
        CheckpointError: naming the first such tensor.
    """
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f'{where}: tensor {name} holds non-finite values (NaN or inf); nothing was written. '
                                  'Save the weights of an earlier, finite checkpoint.')


def read_checkpoint_config(folder: Union[str, Path]) -> Dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked to be a JSON object naming an architecture.

    Raises:
        CheckpointError: missing, unreadable or truncated, naming the file and the fix.
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f'{Path(folder)} has no {CONFIG_NAME}: it is not a checkpoint folder. Pass a folder '
                              'written by sfsc_timm.save(net, folder), a run folder or its export/ folder.')
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f'{path} is not valid JSON ({e}); it is truncated or corrupt. Save or download the '
                              'checkpoint again.') from None
    if not isinstance(config, dict) or not isinstance(config.get('architecture'), str):
        raise CheckpointError(f'{path} names no "architecture"; it was not written by sfsc_timm.save or '
                              'timm.models.save_for_hf.')
    return config


def _label_config(net: nn.Module) -> Dict[str, Any]:
    names = net.pretrained_cfg.get('label_names')
    return dict(label_names=list(names)) if names and len(names) == net.num_classes else {}


def tidy_config(path: Path) -> None:
    """Rewrite a timm config.json so that no key is repeated.

    timm's writer puts ``num_classes`` at the top level, inside ``pretrained_cfg`` and inside ``model_args``, and
    ``global_pool`` and ``label_names`` in two places. Loaders read ``num_classes`` and ``label_names`` from the top
    level (timm's and transformers' alike), and transformers passes ``model_args`` as keyword arguments next to its
    own ``num_classes``, so a repeat breaks ``AutoModel.from_pretrained`` ("got multiple values for keyword argument
    'num_classes'"). Every other argument is rebuilt from ``model_args``, so its top-level copy goes.
    """
    config = json.loads(path.read_text())
    args = config.get('model_args') or {}
    pretrained_cfg = config.get('pretrained_cfg') or {}
    for key in ('num_classes', 'label_names', 'label_descriptions'):
        args.pop(key, None)
        pretrained_cfg.pop(key, None)
    for key in [k for k in config if k in args]:
        del config[key]
    path.write_text(json.dumps(config, indent=2))


def sfsc_model_args(net: nn.Module) -> Dict[str, Any]:
    """The constructor arguments that rebuild ``net`` from its checkpoint (``num_classes`` is config.json's own)."""
    kind = model_kind(net)
    if kind is ModelKind.MODEL_SET:
        raise TypeError('a ModelSet is saved one folder per width: use model_set.save(folder).')
    static = kind is ModelKind.STATIC
    args = dict(embed_dim=net.embed_dim, in_chans=net.in_chans,
                widths=list(net.source_widths if static else net.widths))
    if static:  # its checkpoint holds one width only
        args['width'] = net.active_width
    if net.last_stride != DEFAULT_LAST_STRIDE:  # only then: checkpoints of the default keep their config.json
        args['last_stride'] = net.last_stride
    return args


def describe_shapes(items: Sequence[Tuple[str, Tuple[int, ...], Tuple[int, ...]]], limit: int = 3) -> str:
    shown = ', '.join(f'{k}: checkpoint {tuple(a)} vs model {tuple(b)}' for k, a, b in items[:limit])
    return shown + (f' (+{len(items) - limit} more)' if len(items) > limit else '')
