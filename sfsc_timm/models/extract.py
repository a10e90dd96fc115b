"""Static sub-models: plain timm layers of one width, built from a supernet in memory or from its checkpoint."""
import copy
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..layers import check_width, static_state_map, to_static, width_channels
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet

TensorReader = Callable[[str, Tuple[slice, ...]], torch.Tensor]


def _narrow_backbone_attributes(backbone: nn.Module, width: float) -> None:
    # timm reads these to size heads and feature wrappers; they must describe the narrow backbone
    for attr in ('num_features', 'head_hidden_size'):
        value = getattr(backbone, attr, None)
        if isinstance(value, int):
            setattr(backbone, attr, width_channels(value, width))
    if isinstance(getattr(backbone, 'feature_info', None), list):
        backbone.feature_info = [dict(f, num_chs=width_channels(f['num_chs'], width)) for f in backbone.feature_info]


def build_static(net: SwitchableEmbeddingNet, width: float, read: TensorReader,
                 head: Optional[nn.Module] = None) -> EmbeddingNet:
    """Static network at ``width`` whose tensors come from ``read(supernet_key, index)``.

    Args:
        net: the supernet (may live on the meta device: only its structure is used).
        width: one of ``net.widths``.
        read: returns ``supernet_state[key][index]``, from memory or from a checkpoint file.
        head: a ready classifier to use instead of reading ``head.*`` (a fresh one when the classes differ).
    """
    def part(name: str) -> nn.Module:
        return to_static(getattr(net, name), width, lambda key, index: read(f'{name}.{key}', index))

    backbone = part('backbone')
    _narrow_backbone_attributes(backbone, width)
    static = EmbeddingNet(backbone, part('neck'), head if head is not None else part('head'), net.embed_dim,
                          net.num_classes, width=width, in_chans=net.in_chans)
    static.source_widths = net.widths
    static.last_stride = net.last_stride  # its backbone has the supernet's strides; config.json must say so
    # where each of its tensors lives in the supernet's state_dict, so that load_state_dict (and with it
    # timm.models.load_checkpoint) also takes the supernet's checkpoint
    static._supernet_layout = (static_state_map(net, width), {k: tuple(v.shape) for k, v in net.state_dict().items()})
    static.register_load_state_dict_pre_hook(_take_supernet_state)
    static.train(net.training)
    return static


def _take_supernet_state(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str, local_metadata,
                         strict: bool, missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]):
    """load_state_dict pre-hook of a static sub-model: a supernet state_dict becomes this width's.

    A supernet's state is recognised by its per-width BatchNorm keys. Each tensor of the sub-model is the leading
    slice of its supernet tensor (or that width's BatchNorm). A tensor whose shape is not the supernet's this
    sub-model came from (another embed_dim, another architecture) is passed on unsliced, so load_state_dict reports
    the size mismatch instead of loading a wrong slice; tensors the supernet does not have are reported as unexpected.
    """
    mapping, shapes = module._supernet_layout
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not any('.per_width.' in k for k in keys):
        return
    source = {k[len(prefix):]: state_dict.pop(k) for k in keys}
    for key, (source_key, index) in mapping.items():
        if source_key in source:
            tensor = source[source_key]
            fits = tuple(tensor.shape) == shapes[source_key]
            state_dict[prefix + key] = tensor[index] if index and fits else tensor
    for key, tensor in source.items():
        if key not in shapes:
            state_dict[prefix + key] = tensor


def extract(net: SwitchableEmbeddingNet, width: float) -> EmbeddingNet:
    """Standalone static sub-model of ``net`` at ``width``, with copies of that width's weights.

    The result has plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` layers of the narrow shape inside the timm
    backbone class, and computes exactly what ``net`` computes at ``width``.
    """
    if not isinstance(net, SwitchableEmbeddingNet):
        raise TypeError(f'extract needs a switchable supernet (SwitchableEmbeddingNet), got {type(net).__name__}.')
    width = check_width(width, net.widths)
    state = net.state_dict()

    def read(key: str, index: Tuple[slice, ...]) -> torch.Tensor:
        tensor = state[key]
        return (tensor[index] if index else tensor).detach().clone()

    static = build_static(net, width, read)
    if hasattr(net, 'pretrained_cfg'):
        static.pretrained_cfg = static.default_cfg = copy.deepcopy(net.pretrained_cfg)
    static._model_args = dict(getattr(net, '_model_args', {}), width=width)
    return static
