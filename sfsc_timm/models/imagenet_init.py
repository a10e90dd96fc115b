"""ImageNet initialisation: timm's plain weights of the same architecture, mapped into the supernet.

Each switchable conv and linear layer keeps timm's full tensor (a narrow width uses its leading slice, as always); the
private BatchNorm of each narrower width starts as the leading slice of timm's BatchNorm (weight, bias, running
statistics). timm's classifier is dropped; the neck and the shared classifier keep their fresh initialisation
(docs/design.md, "Pretrained weights").
"""
import functools
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import torch
from safetensors import safe_open
from timm.models import get_pretrained_cfg, load_pretrained, load_state_dict
from torch import nn

from .checkpoint import CheckpointError
from .checkpoint_io import Weights
from .embedding_net import SwitchableEmbeddingNet

_PER_WIDTH = re.compile(r'\.per_width\.[^.]+\.')
_SFSC_PREFIXES = ('backbone.', 'neck.')


def imagenet_cfg(backbone_name: str) -> Optional[Dict[str, Any]]:
    """timm's default pretrained_cfg of the plain architecture (``resnet50`` -> ``resnet50.a1_in1k``), or None."""
    cfg = get_pretrained_cfg(backbone_name)
    return None if cfg is None else cfg.to_dict()


def is_sfsc_state(keys: Iterable[str]) -> bool:
    """Whether state-dict keys are an SFSC network's (backbone and neck under their own prefixes)."""
    return any(k.startswith(_SFSC_PREFIXES) for k in keys)


def _safetensors_keys(path: Path) -> Optional[Tuple[str, ...]]:
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            return tuple(f.keys())
    except Exception:  # unreadable: the SFSC loader names the problem (truncated, corrupt)
        return None


def is_plain_timm_checkpoint(weights: Weights) -> bool:
    """Whether ``weights`` is a plain timm checkpoint, told by its keys (``conv1.weight``, not ``backbone.*``).

    A state dict counts as plain (an SFSC one is refused when it is mapped); so does a torch file, since SFSC
    checkpoints are safetensors only. A missing or unreadable file is left to the SFSC loader, whose errors name
    the problem.
    """
    if isinstance(weights, dict):
        return True
    path = Path(weights)
    if not path.is_file():
        return False
    if path.suffix != '.safetensors':
        return True
    keys = _safetensors_keys(path)
    return keys is not None and not is_sfsc_state(keys)


def _read_plain(weights: Weights) -> Dict[str, torch.Tensor]:
    if isinstance(weights, dict):
        return dict(weights)
    try:  # timm's reader: safetensors, or torch files of tensors only (never unpickled beyond them)
        return load_state_dict(str(weights), weights_only=True)
    except Exception as e:
        raise CheckpointError(f'{weights} is neither a safetensors file nor a torch file of tensors ({e}); pass '
                              'timm\'s model.safetensors, or a checkpoint written by sfsc_timm.save.') from None


def _supernet_backbone_state(state: Dict[str, torch.Tensor], backbone: nn.Module, *, classifiers: Sequence[str],
                             input_convs: Sequence[str], origin: str) -> Dict[str, torch.Tensor]:
    """timm's ``filter_fn`` for ``load_pretrained``: a plain timm state dict as the switchable backbone's.

    Raises:
        CheckpointError: an SFSC state dict, or tensors that do not fit the backbone (named).
    """
    if is_sfsc_state(state):
        raise CheckpointError(f'{origin} holds an SFSC network outside a safetensors file; SFSC checkpoints are read '
                              'from safetensors only: save it with sfsc_timm.save(net, folder) and load that folder.')
    state = {k: v for k, v in state.items() if k.rpartition('.')[0] not in classifiers}
    target = backbone.state_dict()
    mapped, wrong, used = {}, [], set()
    for key, like in target.items():
        source = _PER_WIDTH.sub('.', key)  # a narrow width's private BatchNorm starts from the full one
        if source not in state:
            continue
        used.add(source)
        tensor, full = state[source], target[source]
        same = tensor.shape == full.shape or (source in input_convs and tensor.shape[:1] + tensor.shape[2:] ==
                                              full.shape[:1] + full.shape[2:])  # timm adapts in_chans after this
        if not same:
            wrong.append(f'{source}: checkpoint {tuple(tensor.shape)} vs model {tuple(full.shape)}')
        elif source != key:
            tensor = tensor[tuple(slice(0, n) for n in like.shape)] if like.ndim else tensor
        mapped[key] = tensor
    # BatchNorm fills a missing num_batches_tracked itself (older checkpoints have none)
    missing = [k for k in target if k not in mapped and not k.endswith('num_batches_tracked')]
    unexpected = sorted(set(state) - used)
    if missing or unexpected or wrong:
        problems = [f'{len(missing)} missing tensors (e.g. {missing[:3]})'] if missing else []
        problems += [f'{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})'] if unexpected else []
        problems += [f'shapes differ ({", ".join(wrong[:3])})'] if wrong else []
        raise CheckpointError(
            f'{origin} is a plain timm checkpoint that does not fit {type(backbone).__name__} '
            f'({"; ".join(problems)}). Pass the weights of the same architecture, e.g. timm\'s own '
            f'{getattr(backbone, "pretrained_cfg", {}).get("architecture", "")} model.safetensors.')
    return mapped


def load_imagenet_weights(net: SwitchableEmbeddingNet, weights: Weights) -> SwitchableEmbeddingNet:
    """Load plain timm weights of ``net``'s backbone architecture into the supernet, in place.

    timm's ``load_pretrained`` does the loading (and adapts the first conv to ``net.in_chans``); the mapping to the
    switchable layers is its ``filter_fn``. The neck and the classifier are left as they are.

    Returns:
        ``net``.

    Raises:
        CheckpointError: weights of another architecture, or an unreadable file (named).
    """
    cfg = imagenet_cfg(net.backbone_name) or dict(net.backbone.pretrained_cfg)
    origin = 'the state dict' if isinstance(weights, dict) else str(weights)
    first_conv = cfg.get('first_conv') or ()
    input_convs = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv)
    classifiers = cfg.get('classifier') or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    # the state dict is read here, not by timm, so that a torch file is never unpickled beyond tensors
    location = dict(state_dict=_read_plain(weights), file=None, hf_hub_id=None, url=None, source='')
    filter_fn = functools.partial(_supernet_backbone_state, classifiers=classifiers,
                                  input_convs=tuple(f'{c}.weight' for c in input_convs), origin=origin)
    # num_classes as in the cfg keeps timm's load strict; the classifier is removed by the filter
    load_pretrained(net.backbone, pretrained_cfg=dict(cfg, **location), num_classes=cfg.get('num_classes', 0),
                    in_chans=net.in_chans, filter_fn=filter_fn, strict=True)
    return net
