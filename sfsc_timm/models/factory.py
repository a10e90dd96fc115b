"""The entry every registered ``sfsc_*`` model goes through: supernet or static width, random or pretrained."""
import math
from typing import Any, Dict, Optional, Sequence

from timm.models import resolve_pretrained_cfg
from timm.models._builder import pretrained_cfg_for_features
from torch import nn

from ..layers import DEFAULT_WIDTHS, check_width, check_widths
from .checkpoint_io import resolve_weights
from .embedding_net import SwitchableEmbeddingNet
from .extract import extract
from .features import create_features
from .imagenet_init import is_plain_timm_checkpoint, load_imagenet_weights
from .last_stride import DEFAULT_LAST_STRIDE, check_last_stride
from .pretrained import load_sfsc_checkpoint


def create_sfsc_model(
        variant: str,
        backbone_name: str,
        pretrained: bool = False,
        *,
        width: Optional[float] = None,
        widths: Sequence[float] = DEFAULT_WIDTHS,
        embed_dim: Optional[int] = None,
        num_classes: Optional[int] = None,
        in_chans: int = 3,
        last_stride: int = DEFAULT_LAST_STRIDE,
        features_only: bool = False,
        out_indices: Any = (0, 1, 2, 3, 4),
        feature_cls: Optional[str] = None,
        feature_cfg: Optional[Dict[str, Any]] = None,
        pretrained_cfg: Optional[Dict[str, Any]] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[str] = None,
        pretrained_model_args: Optional[Dict[str, Any]] = None,
        **backbone_kwargs,
) -> nn.Module:
    """Build an SFSC model the way ``timm.create_model`` users expect.

    Args:
        variant: registered name (``'sfsc_resnet50'``).
        backbone_name: timm backbone family (``'resnet50'``).
        pretrained: load weights from the location in the pretrained_cfg (``local-dir:``, ``hf-hub:``, ``file=``;
            by default timm's ImageNet weights of the plain architecture). An SFSC checkpoint loads as saved; a plain
            timm checkpoint (told by its keys) initialises the supernet: every width starts from the leading slices
            of its tensors, and the neck and classifier are new.
        width: None for the switchable supernet; a float for the standalone static sub-model at that width.
        widths: the supernet's widths (a checkpoint's config.json supplies them when loading).
        embed_dim: D, the embedding size shared by all widths; default the full backbone's pre-logits size.
        num_classes: classes of the shared classifier (0: ``forward`` returns embeddings).
        in_chans: image channels; a pretrained first conv is adapted to them as timm does.
        last_stride: 1 removes the downsampling of the backbone's last stage (Bag of Tricks: 256x128 -> 16x8).
        features_only: the backbone's feature maps (timm's ``features_only``): of the static sub-model with
            ``width``, else of the supernet at its active width.
        out_indices: feature levels for ``features_only``.
        feature_cls, feature_cfg: timm's feature wrapper choice; only ``'getter'`` (the default) is supported.
        **backbone_kwargs: passed to the timm backbone (``global_pool``, ``drop_rate``, ``drop_path_rate``, ...).
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay).to_dict()
    widths = check_widths(widths)
    if width is not None:
        width = check_width(width, widths, owner=variant)
    num_classes = (cfg.get('num_classes') or 0) if num_classes is None else num_classes
    last_stride = check_last_stride(last_stride)
    build = dict(widths=widths, embed_dim=embed_dim, num_classes=num_classes, in_chans=in_chans,
                 last_stride=last_stride, **backbone_kwargs)
    weights = resolve_weights(cfg, cache_dir) if pretrained else None
    if weights is not None and not is_plain_timm_checkpoint(weights):
        first_conv = cfg.get('first_conv') or ()
        model = load_sfsc_checkpoint(
            variant, backbone_name, build, weights, width, source_width=(pretrained_model_args or {}).get('width'),
            first_conv=(first_conv,) if isinstance(first_conv, str) else tuple(first_conv))
    else:
        net = SwitchableEmbeddingNet(backbone_name, **build)
        if weights is not None:
            load_imagenet_weights(net, weights)
        model = net if width is None else extract(net, width)
    if last_stride != DEFAULT_LAST_STRIDE and cfg.get('input_size'):
        reduction = model.feature_info[-1]['reduction']
        cfg['pool_size'] = tuple(math.ceil(s / reduction) for s in cfg['input_size'][1:])
    model.pretrained_cfg = model.default_cfg = cfg
    if features_only:
        features = create_features(model, out_indices, feature_cls=feature_cls, feature_cfg=feature_cfg)
        features.pretrained_cfg = features.default_cfg = pretrained_cfg_for_features(cfg)
        return features
    return model
