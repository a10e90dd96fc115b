"""Default pretrained_cfg of the sfsc_* models: re-ID / visual-search input, timm's ImageNet weights as the start."""
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg


def sfsc_cfg(first_conv: str, **kwargs) -> Dict[str, Any]:
    """256x128 person crops (the SFSC paper's Market-1501 setting); the classifier is the shared ``head``."""
    cfg = dict(
        url='', num_classes=0, input_size=(3, 256, 128), pool_size=(8, 4), crop_pct=1.0, interpolation='bilinear',
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv, classifier='head',
        license='apache-2.0')
    cfg.update(kwargs)
    return cfg


def imagenet_init_cfg(variant: str, backbone_name: str, first_conv: str) -> Dict[str, Dict[str, Any]]:
    """``{variant: cfg}`` for ``generate_default_cfgs``: ``pretrained=True`` starts from timm's default ImageNet
    weights of the plain ``backbone_name``, read from timm here (its Hub id, normalisation and license).

    The normalisation is the one those weights were trained with. No tag is added: a trained checkpoint's
    config.json would carry it, and it names the weights the training started from, not the checkpoint. Without
    timm weights for ``backbone_name``: no location (``pretrained=True`` then needs a file).
    """
    plain = get_pretrained_cfg(backbone_name)
    if plain is None or not plain.hf_hub_id:
        return {variant: sfsc_cfg(first_conv)}
    source = dict(hf_hub_id=plain.hf_hub_id, mean=plain.mean, std=plain.std, license=plain.license)
    if plain.hf_hub_filename:
        source['hf_hub_filename'] = plain.hf_hub_filename
    return {variant: sfsc_cfg(first_conv, **source)}
