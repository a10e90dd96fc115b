""" Training checkpoints: the supernet's weights in safetensors plus a training-state file, written atomically.

A checkpoint is a folder (``RUN/checkpoints/last`` or ``.../best``) holding ``model.safetensors`` and ``config.json``
(``sfsc_timm.save``, loadable with ``sfsc_timm.load``) and ``training_state.pt``: the epoch, the optimizer (with the
projection generator), scheduler and scaler states, every rank's RNG states, the resolved config and the best score,
all plain tensors and Python values so that it loads with ``torch.load(weights_only=True)``. The folder is built
next to its target and swapped in only when complete, so a kill mid-write leaves the previous checkpoint intact.
"""
import pickle
import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..models import CheckpointError, CheckpointNotFoundError, ModelKind, find_checkpoint_folder, model_kind, save
from ..atomic_io import staged_folder
from ..models.checkpoint import CHECKPOINT_FILES, WEIGHTS_NAME
from ..models.checkpoint_io import RUN_LAST

__all__ = ['TRAINING_STATE_NAME', 'rng_state', 'set_rng_state', 'save_checkpoint', 'resolve_checkpoint',
           'load_training_state', 'load_weights']

TRAINING_STATE_NAME = 'training_state.pt'


def rng_state() -> Dict[str, Any]:
    """This process's torch, CUDA, numpy and Python RNG states, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(folder: Union[str, Path], net: nn.Module, training_state: Dict[str, Any]) -> Path:
    """Write weights + training state into `folder`, replacing an existing checkpoint only once the new one is whole."""
    folder = Path(folder)
    with staged_folder(folder) as staging:
        save_network(net, staging)
        torch.save(training_state, staging / TRAINING_STATE_NAME)
    return folder


def save_network(net: nn.Module, folder: Path) -> None:
    """A supernet as one checkpoint; a ModelSet (one model per width) as one checkpoint folder per member."""
    if model_kind(net) is ModelKind.MODEL_SET:
        net.save(folder)
    else:
        save(net, folder)


def resolve_checkpoint(path: Union[str, Path]) -> Path:
    """The checkpoint folder ``--resume path`` means: ``path`` itself, or its run's ``checkpoints/last`` (the one
    resolver, :func:`sfsc_timm.models.find_checkpoint_folder`), holding the training state too.

    Raises:
        CheckpointNotFoundError: (a FileNotFoundError) neither, with what was looked for.
    """
    try:
        return find_checkpoint_folder(path, run_subfolder=RUN_LAST, needs=CHECKPOINT_FILES + (TRAINING_STATE_NAME,))
    except CheckpointNotFoundError as e:
        raise CheckpointNotFoundError(f'--resume {e}') from None


def _another_checkpoint(folder: Path) -> str:
    other = folder.parent / ('best' if folder.name == 'last' else 'last')
    return f' (e.g. --resume {other})' if (other / TRAINING_STATE_NAME).is_file() else ''


def load_training_state(folder: Union[str, Path]) -> Dict[str, Any]:
    """The training state of a checkpoint folder (``torch.load`` with ``weights_only=True``: never unpickles code).

    Raises:
        CheckpointError: the file is truncated or corrupt, or holds more than tensors and plain values.
    """
    folder = Path(folder)
    path = folder / TRAINING_STATE_NAME
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'weights only' in str(e).lower():
            raise CheckpointError(f'{path} holds objects other than tensors and plain values; it was not written '
                                  'by sfsc-timm train and is not unpickled. Resume from a checkpoint of this run.') \
                from None
        raise CheckpointError(f'{path} is truncated or corrupt ({e}); resume from another checkpoint'
                              f'{_another_checkpoint(folder)}, or start a new run with another --output.') from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f'{path} is truncated or corrupt ({type(e).__name__}); resume from another checkpoint'
                              f'{_another_checkpoint(folder)}, or start a new run with another --output.') from None
    if not isinstance(state, dict) or not {'epoch', 'config', 'step'} <= set(state):
        raise CheckpointError(f'{path} is not an sfsc-timm training state (no epoch / config / step).')
    return state


def load_weights(folder: Union[str, Path], net: nn.Module) -> None:
    """Load a checkpoint's weights and buffers into `net` in place (strict: every key must match)."""
    if model_kind(net) is ModelKind.MODEL_SET:
        net.load_members_(folder)
        return
    path = Path(folder) / WEIGHTS_NAME
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors' own error types for short files and bad headers
        raise CheckpointError(f'{path} is truncated or corrupt ({e}); resume from another checkpoint'
                              f'{_another_checkpoint(Path(folder))}, or start a new run with another --output.') \
            from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f'checkpoint {folder} does not fit the model built from the recipe: missing {missing[:5]}, unexpected '
            f'{unexpected[:5]}. Resume with the recipe the run was started with.')
