""" Image transforms from a model's pretrained_cfg (timm's resolve_data_config + create_transform).

Every transform starts by converting the PIL image to RGB with :func:`sfsc_timm.data.image_mode.to_rgb` (the
conversion ``sfsc-timm embed`` uses too), so grayscale (Fashion-MNIST), palette, RGBA, 16-bit and float images give
3-channel tensors of their true pixels. Training adds a re-ID-friendly version of timm's ImageNet augmentation: a
mild random resized crop that keeps the model's input aspect ratio, horizontal flip, no colour jitter and random
erasing.
"""
from typing import Any, Callable, Dict, Mapping, Union

import torch.nn as nn
from PIL import Image
from timm.data import resolve_data_config, create_transform
from torchvision import transforms

from .image_mode import to_rgb

__all__ = ['ToRGB', 'REID_TRAIN_DEFAULTS', 'resolve_data_cfg', 'build_transforms']

# keys of timm's data config (resolve_data_config); other overrides go to create_transform
_DATA_CFG_KEYS = ('input_size', 'img_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')

REID_TRAIN_DEFAULTS: Dict[str, Any] = dict(
    scale=(0.64, 1.0),  # crop area fraction; timm's ImageNet default (0.08, 1) is too strong for re-ID
    hflip=0.5,
    color_jitter=None,  # no colour jitter
    re_prob=0.5,  # random erasing (Zhong et al.), standard in re-ID recipes
    re_mode='const',  # zeros after normalisation = the mean colour
)


class ToRGB:
    """Convert a PIL image of any mode to 8-bit RGB with :func:`to_rgb` (which refuses modes it cannot map)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_rgb(img)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def resolve_data_cfg(model_or_cfg: Union[nn.Module, Mapping[str, Any], Any], **overrides) -> Dict[str, Any]:
    """timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode) of a model or pretrained_cfg.

    Args:
        model_or_cfg: A timm model, a pretrained_cfg dict or a timm `PretrainedCfg`.
        **overrides: Data config keys to override (input_size, img_size, interpolation, mean, std, crop_pct,
            crop_mode).
    """
    args = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(model_or_cfg, nn.Module):
        return resolve_data_config(args, model=model_or_cfg)
    cfg = model_or_cfg.to_dict() if hasattr(model_or_cfg, 'to_dict') else dict(model_or_cfg)
    return resolve_data_config(args, pretrained_cfg=cfg)


def build_transforms(
        model_or_cfg: Union[nn.Module, Mapping[str, Any], Any],
        *,
        train: bool,
        **overrides,
) -> Callable[[Image.Image], Any]:
    """Build the train or eval transform of a model: PIL image (any mode) -> normalised (3, H, W) tensor.

    Args:
        model_or_cfg: A timm model, a pretrained_cfg dict or a timm `PretrainedCfg`.
        train: Training augmentation (True) or the deterministic eval transform (False).
        **overrides: Data config keys (input_size, img_size, interpolation, mean, std, crop_pct, crop_mode) and
            any `timm.data.create_transform` argument (e.g. re_prob=0., scale=(0.08, 1.), ratio=..., hflip=0.,
            color_jitter=0.4, auto_augment='rand-m9-mstd0.5'). Training defaults: REID_TRAIN_DEFAULTS, with the
            crop aspect-ratio range 3/4..4/3 of the input's width / height.

    Returns:
        A torchvision `Compose` starting with `ToRGB()`.
    """
    data_cfg = resolve_data_cfg(model_or_cfg, **{k: overrides.pop(k) for k in _DATA_CFG_KEYS if k in overrides})
    kwargs: Dict[str, Any] = {}
    if train:
        _, height, width = data_cfg['input_size']
        kwargs.update(REID_TRAIN_DEFAULTS, ratio=(0.75 * width / height, width / height / 0.75))
    kwargs.update(overrides)
    tf = create_transform(**data_cfg, is_training=train, **kwargs)
    return transforms.Compose([ToRGB(), *(tf.transforms if isinstance(tf, transforms.Compose) else [tf])])
