"""``last_stride=1``: the last downsampling of a timm backbone removed (Luo et al. 2019, "Bag of Tricks").

Re-ID embeddings gain from a finer last feature map: a 256x128 person crop gives 16x8 positions instead of 8x4. Only
strides change, never a weight's shape, so the ImageNet weights and every checkpoint fit either setting. timm's own
``output_stride=16`` is not the same thing: it also dilates the last stage's convolutions.
"""
from typing import List

from timm.layers import get_padding
from timm.models import MobileNetV3, ResNet
from torch import nn

DEFAULT_LAST_STRIDE = 2


def check_last_stride(last_stride) -> int:
    """``last_stride`` as an int, 1 or 2.

    Raises:
        ValueError: any other value, naming the two choices.
    """
    if isinstance(last_stride, bool) or last_stride not in (1, 2):
        raise ValueError(f'last_stride must be 2 (the backbone as timm builds it) or 1 (no downsampling in the last '
                         f'stage), got {last_stride!r}.')
    return int(last_stride)


def _downsamples(module: nn.Module) -> bool:
    stride = getattr(module, 'stride', None)
    strides = stride if isinstance(stride, (tuple, list)) else (stride,)
    return any(isinstance(s, int) and s > 1 for s in strides)


def _last_downsampling_block(backbone: nn.Module) -> nn.Module:
    """The block where the backbone's last stage halves the resolution (in both families, its first block)."""
    if isinstance(backbone, ResNet):
        return backbone.layer4[0]
    if isinstance(backbone, MobileNetV3):
        stages = [stage for stage in backbone.blocks if any(_downsamples(m) for m in stage.modules())]
        if stages:
            return stages[-1][0]
    raise ValueError(f'last_stride=1 is supported for ResNet and MobileNetV3 backbones, not '
                     f'{type(backbone).__name__}; leave last_stride at 2.')


def set_last_stride(backbone: nn.Module, last_stride: int) -> nn.Module:
    """Remove the last downsampling of a plain (unconverted) timm ``backbone`` when ``last_stride == 1``, in place.

    Strided convolutions of that block get stride 1 (their padding is the same for both strides, checked), an
    average-pool shortcut (``avg_down``) becomes ``nn.Identity`` as timm builds it for stride 1, and the
    ``feature_info`` reduction of the last level is halved.

    Returns:
        ``backbone``.

    Raises:
        ValueError: a backbone family or block this does not know how to change.
    """
    if check_last_stride(last_stride) == DEFAULT_LAST_STRIDE:
        return backbone
    block = _last_downsampling_block(backbone)
    changed: List[str] = []
    for name, module in list(block.named_modules()):
        if not name or not _downsamples(module):
            continue
        if type(module) is nn.Conv2d:
            padding = tuple(get_padding(k, 1, d) for k, d in zip(module.kernel_size, module.dilation))
            if tuple(module.padding) != padding:
                raise ValueError(f'{name} pads {module.padding} at stride {module.stride}, which is not its padding '
                                 'at stride 1; last_stride=1 is not supported for this backbone.')
            module.stride = (1, 1)
        elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
            parent, _, child = name.rpartition('.')
            setattr(block.get_submodule(parent) if parent else block, child, nn.Identity())
        else:
            raise ValueError(f'{name} ({type(module).__name__}) downsamples in a way last_stride=1 cannot change; '
                             'leave last_stride at 2.')
        changed.append(name)
    if not changed:
        raise ValueError(f'{type(backbone).__name__} has no downsampling in its last stage; leave last_stride at 2.')
    final = max(f['reduction'] for f in backbone.feature_info)
    backbone.feature_info = [dict(f, reduction=f['reduction'] // 2) if f['reduction'] == final else f
                             for f in backbone.feature_info]
    return backbone
