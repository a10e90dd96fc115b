"""Embedding networks: a timm backbone, a BNNeck to D dimensions and one classifier shared by every width."""
import contextlib
import numbers
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import timm
import torch
from torch import nn

from ..layers import (
    SwitchableBatchNorm1d, SwitchableLinear, check_width, check_widths, convert_to_switchable, switchable_layers,
    width_channels,
)
from .heads import EmbeddingNeck, check_pooling, create_head, init_head
from .kinds import ModelKind, SfscModel
from .last_stride import DEFAULT_LAST_STRIDE, check_last_stride, set_last_stride


class WidthSwitching:
    """``width(w)`` context manager for networks with ``set_width`` and a ``_width`` (supernet, ModelSet)."""

    _width: float

    def set_width(self, width: float):
        raise NotImplementedError

    @contextlib.contextmanager
    def width(self, width: float) -> Iterator:
        """Compute at ``width`` inside the block, then switch back."""
        previous = self._width
        self.set_width(width)
        try:
            yield self
        finally:
            self.set_width(previous)


class EmbeddingNet(nn.Module, SfscModel):
    """Backbone -> neck (Linear to D without bias, BatchNorm1d) -> head (Linear D -> classes, or Identity).

    The same class serves the switchable supernet (:class:`SwitchableEmbeddingNet`) and the static sub-models that
    ``extract`` builds from it, whose backbone is the plain timm class (e.g. ``timm.models.ResNet``).

    timm's meanings: ``num_features`` is the channel count of ``forward_features``' output (at the active width),
    ``head_hidden_size`` is D, the embedding size, the same at every width. ``forward`` returns logits, or the
    D-dimensional embedding when ``num_classes == 0``; it does not change with train/eval mode.
    ``forward_head(x, pre_logits=True)`` is the embedding at every width.
    """
    __jit_unused_properties__ = ['global_pool']

    kind = ModelKind.STATIC
    last_stride = DEFAULT_LAST_STRIDE  # the stride of the backbone's last stage (1: Bag of Tricks), saved with it

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, embed_dim: int, num_classes: int,
                 width: float = 1.0, in_chans: int = 3):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_features = backbone.num_features
        self.head_hidden_size = embed_dim
        self.num_classes = num_classes
        self.in_chans = in_chans
        self._width = width
        self.source_widths = (width,)  # the widths of the supernet it comes from (``extract`` sets them)
        self.feature_info = [dict(f, module=f'backbone.{f["module"]}') for f in backbone.feature_info]
        self._follow_pooling()

    @property
    def embed_dim(self) -> int:
        """D, the embedding size, the same at every width."""
        return self.head_hidden_size

    @property
    def active_width(self) -> float:
        """The width this network computes at."""
        return self._width

    @property
    def global_pool(self) -> Optional[str]:
        """The backbone's pooling type ('' for none); timm's config writer records it."""
        pool = getattr(self.backbone, 'global_pool', None)
        return getattr(pool, 'pool_type', None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (B, num_features, H', W')."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map, project to the D-dim embedding; with ``pre_logits=False`` classify it too."""
        x = self.backbone.forward_head(x, pre_logits=True)
        x = self.neck(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The backbone's feature maps at the levels of ``feature_info`` (timm's arguments and meanings).

        Args:
            x: input images.
            indices: the last n levels if an int, all if None, these levels if a sequence.
            norm: apply the backbone's final norm to the intermediates where it has one.
            stop_early: stop after the last level asked for.
            output_fmt: 'NCHW'.
            intermediates_only: return only the intermediates.

        Returns:
            (``forward_features`` output, intermediates), or the intermediates alone.
        """
        return self.backbone.forward_intermediates(
            x, indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
            intermediates_only=intermediates_only)

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the backbone layers after the last level in ``indices`` (and the neck and head with ``prune_head``).

        Returns:
            The absolute indices of the levels kept.
        """
        taken = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        if prune_head:
            self.neck = nn.Identity()
            self.head = nn.Identity()
            self.num_classes = 0
        return taken

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New shared classifier with ``num_classes`` outputs (0: none, ``forward`` gives embeddings).

        Args:
            num_classes: classes of the new classifier.
            global_pool: the backbone's new pooling (timm's names); ``''`` keeps the map, so ``forward`` gives an
                embedding per position, (B, D, H', W'). None keeps the current pooling.
        """
        check_pooling(self.global_pool if global_pool is None else global_pool, num_classes)
        if global_pool is not None:
            self.backbone.reset_classifier(0, global_pool)
            self._follow_pooling()
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = create_head(self.head_hidden_size, num_classes, device=device)

    def _follow_pooling(self) -> None:
        if isinstance(self.neck, EmbeddingNeck):
            self.neck.spatial = self.global_pool == ''

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        inner = self.backbone.group_matcher(coarse)
        return {k: _prefix_matcher(v) for k, v in inner.items()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


def _prefix_matcher(matcher):
    # timm group matchers are regexes (optionally with a tuple of extra args); they must now see 'backbone.' first
    if isinstance(matcher, str):
        return '^backbone\\.' + matcher.lstrip('^')
    if isinstance(matcher, (list, tuple)):
        return [(_prefix_matcher(m[0]), *m[1:]) if isinstance(m, tuple) else _prefix_matcher(m) for m in matcher]
    return matcher


class SwitchableEmbeddingNet(EmbeddingNet, WidthSwitching):
    """The SFSC supernet: every width from one set of weights, switched with ``set_width`` or ``width``.

    ``num_features`` and ``feature_info`` describe the active width; ``head_hidden_size`` (D) is the same at all.

    Args:
        backbone_name: timm model name of the backbone family (e.g. ``'resnet50'``).
        widths: widths to train and switch between (must include 1.0).
        embed_dim: D; default: the full-width backbone's pre-logits size (``head_hidden_size``).
        num_classes: classes of the shared classifier; 0 for none.
        in_chans: image channels.
        last_stride: 2 as timm builds the backbone; 1 removes the last stage's downsampling (a 256x128 input gives
            a 16x8 feature map; ResNet and MobileNetV3).
        input_layers: backbone module names that read the image (their input channels are never sliced);
            default: the backbone's ``pretrained_cfg['first_conv']``.
        device: where to allocate the weights (``'meta'`` to build a skeleton without storage).
        **backbone_kwargs: passed to ``timm.create_model`` for the backbone (``drop_rate``, ``drop_path_rate``,
            ``global_pool``...).
    """

    kind = ModelKind.SUPERNET

    def __init__(self, backbone_name: str, widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                 embed_dim: Optional[int] = None, num_classes: int = 0, in_chans: int = 3,
                 last_stride: int = DEFAULT_LAST_STRIDE, input_layers: Optional[Sequence[str]] = None, device=None,
                 **backbone_kwargs):
        widths = check_widths(widths)
        check_pooling(backbone_kwargs.get('global_pool'), num_classes)
        backbone = timm.create_model(backbone_name, pretrained=False, num_classes=0, in_chans=in_chans,
                                     device=device, **backbone_kwargs)
        set_last_stride(backbone, last_stride)  # before conversion: the switchable convs copy the strides
        if input_layers is None:
            first_conv = backbone.pretrained_cfg.get('first_conv')
            input_layers = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
        convert_to_switchable(backbone, widths, input_layers)
        feature_dim = getattr(backbone, 'head_hidden_size', None) or backbone.num_features  # pre-logits size
        if embed_dim is not None and (isinstance(embed_dim, bool) or not isinstance(embed_dim, numbers.Integral)
                                      or embed_dim < 1):
            raise ValueError(f'embed_dim must be a positive int (the embedding size D) or None for the backbone\'s '
                             f'{feature_dim}, got {embed_dim!r}.')
        embed_dim = feature_dim if embed_dim is None else int(embed_dim)
        neck = EmbeddingNeck(
            fc=SwitchableLinear(feature_dim, embed_dim, bias=False, widths=widths, slice_out=False, device=device),
            bn=SwitchableBatchNorm1d(embed_dim, widths=widths, slice_channels=False, device=device),
        )
        head = create_head(embed_dim, num_classes, device=device, init=False)
        super().__init__(backbone, neck, head, embed_dim, num_classes, width=1.0, in_chans=in_chans)
        self.backbone_name = backbone_name
        self.widths = widths
        self.last_stride = check_last_stride(last_stride)
        self._full_num_features = backbone.num_features
        self._full_feature_info = list(self.feature_info)
        nn.init.kaiming_normal_(self.neck.fc.weight, mode='fan_out')
        init_head(self.head)  # after the neck: the random streams of earlier versions, so seeded runs repeat

    def set_width(self, width: float) -> 'SwitchableEmbeddingNet':
        """Switch every layer to ``width`` (one of ``self.widths``); returns ``self``."""
        width = check_width(width, self.widths)
        for layer in switchable_layers(self).values():
            layer.set_width(width)
        self._width = width
        self.num_features = width_channels(self._full_num_features, width)
        self.feature_info = self.channels_at(width)
        return self

    def channels_at(self, width: float) -> List[Dict[str, Any]]:
        """``feature_info`` as it is at ``width`` (channel counts follow the channel rule)."""
        return [dict(f, num_chs=width_channels(f['num_chs'], width)) for f in self._full_feature_info]
