"""Switchable ResNets (He et al. 2016) on timm's ResNet: ``sfsc_resnet10t/18/34/50/101``, ImageNet-initialised
from timm's weights of the same ResNet with ``pretrained=True``; ``last_stride=1`` for re-ID."""
from timm.models import generate_default_cfgs, register_model

from .default_cfg import imagenet_init_cfg
from .embedding_net import EmbeddingNet
from .factory import create_sfsc_model

default_cfgs = generate_default_cfgs({
    **imagenet_init_cfg('sfsc_resnet10t', 'resnet10t', 'backbone.conv1.0'),
    **imagenet_init_cfg('sfsc_resnet18', 'resnet18', 'backbone.conv1'),
    **imagenet_init_cfg('sfsc_resnet34', 'resnet34', 'backbone.conv1'),
    **imagenet_init_cfg('sfsc_resnet50', 'resnet50', 'backbone.conv1'),
    **imagenet_init_cfg('sfsc_resnet101', 'resnet101', 'backbone.conv1'),
})


@register_model
def sfsc_resnet10t(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable ResNet-10-T (timm's tiered-stem ResNet-10): half ResNet-18's compute, for CPU benchmarks."""
    return create_sfsc_model('sfsc_resnet10t', 'resnet10t', pretrained, **kwargs)


@register_model
def sfsc_resnet18(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable ResNet-18 (widths 0.25/0.5/0.75/1.0 by default); ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_resnet18', 'resnet18', pretrained, **kwargs)


@register_model
def sfsc_resnet34(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable ResNet-34; ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_resnet34', 'resnet34', pretrained, **kwargs)


@register_model
def sfsc_resnet50(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable ResNet-50, the SFSC paper's backbone; ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_resnet50', 'resnet50', pretrained, **kwargs)


@register_model
def sfsc_resnet101(pretrained: bool = False, **kwargs) -> EmbeddingNet:
    """Switchable ResNet-101; ``width=w`` gives the static sub-model."""
    return create_sfsc_model('sfsc_resnet101', 'resnet101', pretrained, **kwargs)
