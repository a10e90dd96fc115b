"""Switchable MobileNetV3 (Howard et al. 2019) on timm's MobileNetV3: depthwise convs and squeeze-excite."""
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from .embedding_net import EmbeddingNet
from .factory import create_sfsc_model


def _cfg(**kwargs):
    return dict(
        url='', num_classes=0, input_size=(3, 256, 128), pool_size=(8, 4), crop_pct=1.0, interpolation='bilinear',
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv='backbone.conv_stem', classifier='head',
        license='apache-2.0', **kwargs)


default_cfgs = generate_default_cfgs({
    'sfsc_mobilenetv3_large_150d': _cfg(),
})


@register_model
def sfsc_mobilenetv3_large_150d(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable MobileNetV3-Large 1.5 (deep stem); ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_mobilenetv3_large_150d', 'mobilenetv3_large_150d', pretrained, **kwargs)
