"""Default pretrained_cfg of the sfsc_* models: re-ID / visual-search input, ImageNet statistics."""
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def sfsc_cfg(first_conv: str, **kwargs) -> Dict[str, Any]:
    """256x128 person crops (the SFSC paper's Market-1501 setting); the classifier is the shared ``head``."""
    return dict(
        url='', num_classes=0, input_size=(3, 256, 128), pool_size=(8, 4), crop_pct=1.0, interpolation='bilinear',
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv, classifier='head',
        license='apache-2.0', **kwargs)
