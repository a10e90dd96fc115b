"""Where a network's weights are, and loading them: the one resolver and the one loader, ``sfsc_timm.load``.

Every way in asks here which file holds the weights: :func:`resolve_source` says what a source names (a Hub id, a
checkpoint or run folder, a weights file, a registered name), :func:`find_checkpoint_folder` which folder of a run
holds the checkpoint (its ``export/`` to load, its ``checkpoints/last`` to resume), and :func:`resolve_weights` which
file a timm ``pretrained_cfg`` points at, so ``timm.create_model(..., pretrained=True)`` finds a local folder by the
same rule. What the file holds is read elsewhere: an SFSC checkpoint slice by slice (``pretrained``), a plain timm one
into the supernet (``imagenet_init``). docs/loading.md has the table of sources.
"""
import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import timm
import torch
from timm.models._builder import _resolve_pretrained_source
from timm.models._hub import download_cached_file, download_from_hf
from torch import nn

from ..errors import RunError
from ..layers import check_width
from .checkpoint import CHECKPOINT_FILES, CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_checkpoint_config
from .kinds import ModelKind
from .model_set import ModelSet, is_model_set_folder, member_folders

__all__ = [
    'RUN_EXPORT', 'RUN_LAST', 'CheckpointNotFoundError', 'WeightsUnavailableError', 'SourceKind', 'CheckpointSource',
    'resolve_source', 'find_checkpoint_folder', 'resolve_weights', 'checkpoint_kind', 'load',
]

RUN_EXPORT = 'export'  # a finished run's final checkpoint: what loading a run folder means
RUN_LAST = 'checkpoints/last'  # a run's latest training checkpoint: what --resume continues
HUB_PREFIXES = ('hf-hub:', 'hf_hub:')
LOCAL_PREFIX = 'local-dir:'
PICKLED_SUFFIXES = ('.bin', '.pth', '.pt', '.ckpt', '.pkl')
NEVER_UNPICKLED = ('pickled weights are never loaded (unpickling can run code); load them in a process you trust and '
                   f'write {WEIGHTS_NAME} with sfsc_timm.save(net, folder).')
ANY_SOURCE = ('a checkpoint folder (sfsc_timm.save), a run folder of sfsc-timm train or its export/ folder, a '
              '.safetensors file, local-dir:FOLDER, hf-hub:ORG/NAME or a registered sfsc_* model name')

Weights = Union[Path, Dict[str, torch.Tensor]]


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint where a source points. Both kinds, so that code catching what loading raises (CheckpointError)
    and code catching a missing path (FileNotFoundError) each see it."""


class WeightsUnavailableError(RunError):
    """The weights are on the Hub, which cannot be reached, and not in the local cache."""


class SourceKind(enum.Enum):
    """What a load source names."""
    HUB = 'hub'  # hf-hub:ORG/NAME[@REVISION]: a repository with config.json and model.safetensors
    FOLDER = 'folder'  # a checkpoint folder (model.safetensors + config.json): a supernet or one static width
    MODEL_SET = 'model_set'  # a baseline's folder of width_*/ member checkpoints
    FILE = 'file'  # a .safetensors file with no config.json naming its architecture (a plain timm file)
    MODEL_NAME = 'model_name'  # a registered sfsc_* model: its default pretrained weights


@dataclass(frozen=True)
class CheckpointSource:
    """A resolved load source: its kind and where it is (a Hub id, a local path or a model name)."""
    kind: SourceKind
    location: str

    @property
    def path(self) -> Path:
        return Path(self.location)

    def saved_width(self) -> Optional[float]:
        """The width of a static sub-model checkpoint (config.json's ``model_args.width``); None for the others."""
        if self.kind is SourceKind.FOLDER:
            config = read_checkpoint_config(self.path)
        elif self.kind is SourceKind.HUB:
            from huggingface_hub import hf_hub_download  # the file timm downloads to build the model
            repo_id, _, revision = self.location.split(':', 1)[1].partition('@')
            config = json.loads(Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision or None)).read_text())
        else:
            return None
        width = (config.get('model_args') or {}).get('width')
        return None if width is None else float(width)


def resolve_source(source: Union[str, Path, CheckpointSource]) -> CheckpointSource:
    """What ``source`` names (docs/loading.md has the table).

    Raises:
        CheckpointNotFoundError: nothing there (a Hub id written without ``hf-hub:`` is named as such), or a folder
            holding no checkpoint (what is missing, and why when it can tell: an unfinished run, pickled weights).
        CheckpointError: a pickled weights file, or a file that is not safetensors.
    """
    if isinstance(source, CheckpointSource):
        return source
    text = str(source)
    if text.startswith(HUB_PREFIXES):
        return CheckpointSource(SourceKind.HUB, text)
    path = Path(text.removeprefix(LOCAL_PREFIX))
    if path.is_file():
        return _file_source(path)
    if path.is_dir():
        folder = find_checkpoint_folder(path)
        return CheckpointSource(SourceKind.MODEL_SET if is_model_set_folder(folder) else SourceKind.FOLDER, str(folder))
    if not text.startswith(LOCAL_PREFIX):
        if text.startswith('sfsc_') and timm.is_model(text):
            return CheckpointSource(SourceKind.MODEL_NAME, text)
        if text.count('/') == 1 and not text.startswith(('.', '/', '~')):
            raise CheckpointNotFoundError(f'{text} is not a local folder. For a Hub repository write hf-hub:{text}.')
    raise CheckpointNotFoundError(f'{path} does not exist; pass {ANY_SOURCE}.')


def _file_source(path: Path) -> CheckpointSource:
    if path.suffix in PICKLED_SUFFIXES:
        raise CheckpointError(f'{path} is a pickled weights file: {NEVER_UNPICKLED}')
    if path.suffix != '.safetensors':
        raise CheckpointError(f'{path} is not a .safetensors file; pass {ANY_SOURCE}.')
    if path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
        return CheckpointSource(SourceKind.FOLDER, str(path.parent))  # CK/model.safetensors: the checkpoint CK
    return CheckpointSource(SourceKind.FILE, str(path))


def find_checkpoint_folder(path: Union[str, Path], *, run_subfolder: str = RUN_EXPORT,
                           needs: Sequence[str] = CHECKPOINT_FILES) -> Path:
    """The folder holding the checkpoint a local ``path`` means: ``path`` itself, or the ``run_subfolder`` of a
    training run folder.

    Args:
        path: a checkpoint folder, or a run folder of ``sfsc-timm train``.
        run_subfolder: the checkpoint of a run that is meant: :data:`RUN_EXPORT` (the final model, what loading
            means) or :data:`RUN_LAST` (what ``--resume`` continues).
        needs: the files the folder must hold. A baseline's folder of ``width_*/`` members counts as holding the
            checkpoint's own files (each member holds them).

    Raises:
        CheckpointNotFoundError: neither holds the files; the message names what is missing and, where it can tell,
            why (a run that has not finished, pickled weights).
    """
    path = Path(path)
    files = ', '.join(needs[:-1]) + f' and {needs[-1]}' if len(needs) > 1 else needs[0]
    accepted = f'a checkpoint folder holding {files}, or a run folder of sfsc-timm train (with {run_subfolder}/)'
    if not path.exists():
        raise CheckpointNotFoundError(f'{path} does not exist: no checkpoint there. Pass {accepted}.')
    if not path.is_dir():
        problem = (f'is a pickled weights file: {NEVER_UNPICKLED}' if path.suffix in PICKLED_SUFFIXES else
                   f'is a file; pass the checkpoint folder holding it ({path.parent}), or {accepted}.')
        raise CheckpointNotFoundError(f'{path} {problem}')
    for folder in (path, path / run_subfolder):
        if _holds(folder, needs):
            return folder
    missing = [name for name in needs if not _holds(path, (name,))]
    hint = _why_missing(path, run_subfolder, missing) or f' Pass {accepted}.'
    raise CheckpointNotFoundError(f'{path}: no checkpoint there (nor in {path / run_subfolder}); missing: '
                                  f'{", ".join(missing)}.{hint}')


def _holds(folder: Path, names: Sequence[str]) -> bool:
    own = [n for n in names if n not in CHECKPOINT_FILES or not is_model_set_folder(folder)]
    return folder.is_dir() and all((folder / n).is_file() for n in own)


def _why_missing(path: Path, run_subfolder: str, missing: Sequence[str]) -> str:
    """The reason a folder holds no checkpoint, when the folder tells it; else ``''``."""
    run_started = (path / 'config.yaml').is_file() and not (path / 'checkpoints').is_dir()
    if run_started and run_subfolder == RUN_LAST:
        return (f' The run was stopped before its first checkpoint, so there is nothing to resume; remove {path} and '
                'start the run again without --resume.')
    if run_started:
        return (f' It is a training run stopped before its first checkpoint, so it holds no model yet; remove {path} '
                'and start the run again.')
    if run_subfolder == RUN_EXPORT and (path / 'checkpoints').is_dir() and not (path / RUN_EXPORT).is_dir():
        return (f' {path} looks like a training run that has not finished: its final export ({path / RUN_EXPORT}) is '
                f'written when training ends; finish or resume it first (sfsc-timm train --resume {path}); its '
                f'checkpoints so far are in {path}/checkpoints/.')
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES and p.is_file())
    if WEIGHTS_NAME in missing and pickled:
        return f' It holds {", ".join(pickled[:3])}: {NEVER_UNPICKLED}'
    if list(missing) == [CONFIG_NAME]:
        return (f' {path / WEIGHTS_NAME} has no {CONFIG_NAME} beside it, so the architecture and widths are unknown. '
                'Re-save the network with sfsc_timm.save(net, folder), or name them yourself: '
                f"sfsc_timm.load('{path / WEIGHTS_NAME}', model_name='sfsc_resnet50', widths=..., embed_dim=..., "
                'num_classes=...).')
    return ''


def resolve_weights(pretrained_cfg: Dict[str, Any], cache_dir: Optional[Union[str, Path]] = None) -> Weights:
    """The weights file a timm ``pretrained_cfg`` points at (downloaded through timm if needed), or the state dict
    it holds under ``state_dict``.

    The location is taken as ``timm.models.load_pretrained`` takes it (an explicit ``hf-hub`` or ``local-dir``
    source, then ``state_dict``, ``file``, ``hf_hub_id`` and ``url``), so ``pretrained_cfg_overlay=dict(file=...)``
    means what it means for any timm model; a local folder is found by :func:`find_checkpoint_folder`'s rule.

    Raises:
        WeightsUnavailableError: the Hub cannot be reached and the file is not cached; names the Hub id and how to
            pass a local file instead.
        CheckpointNotFoundError: a folder without ``model.safetensors``.
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


def _local_weights(location: Path) -> Path:
    if not location.is_dir():
        return location  # a file: a missing or unreadable one is named by the checkpoint reader
    folder = find_checkpoint_folder(location, needs=(WEIGHTS_NAME,))
    if is_model_set_folder(folder):
        raise CheckpointError(f'{folder} holds a baseline\'s separate per-width models (width_*/ folders), one '
                              'checkpoint per width; pass one member folder.')
    return folder / WEIGHTS_NAME


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


def load(source: Union[str, Path, CheckpointSource], width: Optional[float] = None, *,
         model_name: Optional[str] = None, **kwargs) -> nn.Module:
    """The network saved at ``source``: the supernet, a baseline's model set, or (``width``) one static width, of
    which only that width's slices of the weights are read.

    Args:
        source: anything :func:`resolve_source` takes (docs/loading.md): a checkpoint folder, a run folder (its
            ``export/``), ``local-dir:FOLDER``, ``hf-hub:ORG/NAME``, a ``.safetensors`` file, a registered
            ``sfsc_*`` name.
        width: None for what was saved (a supernet, a model set, a static sub-model); a width for that static
            sub-model (a model set's member of that width).
        model_name: the registered ``sfsc_*`` architecture to build, for weights without a config.json naming it (a
            plain timm file: the supernet starts from it; an SFSC file saved without its config.json).
        **kwargs: passed to ``timm.create_model`` (``num_classes``, and with ``model_name``: ``widths``,
            ``embed_dim``, ...).

    Raises:
        CheckpointError: no checkpoint at ``source``, or one that cannot be read or does not fit (named, with the fix).
        ValueError: a width the checkpoint was not trained at.
    """
    where = resolve_source(source)
    if model_name is not None:
        return _load_weights_into(model_name, where, width, kwargs)
    if where.kind in (SourceKind.HUB, SourceKind.MODEL_NAME):
        return timm.create_model(where.location, pretrained=True, width=width, **kwargs)
    if where.kind is SourceKind.FILE:
        raise CheckpointError(
            f'{where.path} has no {CONFIG_NAME} beside it, so its architecture is unknown. Pass it: '
            f"sfsc_timm.load('{where.path}', model_name='sfsc_resnet50', ...) (with widths=..., embed_dim=..., "
            'num_classes=... for an SFSC checkpoint), or load the checkpoint folder written by sfsc_timm.save.')
    if where.kind is SourceKind.MODEL_SET:
        members = member_folders(where.path)
        if width is not None:  # one member, the others are not read
            return _load_folder(members[check_width(width, tuple(members), 'the model set')], None, kwargs)
        return ModelSet({w: _load_folder(folder, None, kwargs) for w, folder in members.items()})
    return _load_folder(where.path, width, kwargs)




def _load_folder(folder: Path, width: Optional[float], kwargs: Dict[str, Any]) -> nn.Module:
    read_checkpoint_config(folder)  # a truncated config.json is named here, not deep inside timm
    return timm.create_model(f'{LOCAL_PREFIX}{folder}', pretrained=True, width=width, **kwargs)


def _load_weights_into(model_name: str, where: CheckpointSource, width: Optional[float],
                       kwargs: Dict[str, Any]) -> nn.Module:
    if where.kind not in (SourceKind.FILE, SourceKind.FOLDER):
        raise CheckpointError(f'model_name={model_name!r} is for a weights file or folder; {where.location} names '
                              'its architecture itself: load it without model_name.')
    weights = where.path / WEIGHTS_NAME if where.kind is SourceKind.FOLDER else where.path
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(weights))
    return timm.create_model(model_name, pretrained=True, width=width, pretrained_cfg_overlay=overlay, **kwargs)
