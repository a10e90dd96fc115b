"""Switchable MobileNetV3 (Howard et al. 2019) on timm's MobileNetV3: depthwise convs and squeeze-excite."""
from timm.models import generate_default_cfgs, register_model

from .default_cfg import imagenet_init_cfg
from .embedding_net import EmbeddingNet
from .factory import create_sfsc_model

default_cfgs = generate_default_cfgs({
    **imagenet_init_cfg('sfsc_mobilenetv3_large_150d', 'mobilenetv3_large_150d', 'backbone.conv_stem'),
})


@register_model
def sfsc_mobilenetv3_large_150d(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable MobileNetV3-Large 1.5 (deep stem); ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_mobilenetv3_large_150d', 'mobilenetv3_large_150d', pretrained, **kwargs)
