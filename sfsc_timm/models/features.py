"""``features_only=True``: the backbone's feature maps, of a static sub-model or of the supernet at its active width."""
from typing import Any, Dict, Optional, Tuple

from timm.models import FeatureInfo
from timm.models._features import FeatureGetterNet
from torch import nn

from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet, WidthSwitching


class SwitchableFeatures(FeatureGetterNet, WidthSwitching):
    """timm's ``FeatureGetterNet`` around the supernet: its feature maps at the active width.

    ``set_width`` / ``width`` switch the supernet; ``feature_info`` always gives the active width's channels.
    """

    def __init__(self, model: SwitchableEmbeddingNet, out_indices: Any):
        super().__init__(model, out_indices=out_indices)

    @property
    def widths(self) -> Tuple[float, ...]:
        return self.model.widths

    @property
    def _width(self) -> float:
        return self.model.active_width

    def set_width(self, width: float) -> 'SwitchableFeatures':
        """Switch the supernet to ``width``; ``feature_info`` follows."""
        self.model.set_width(width)
        self.feature_info = FeatureInfo(self.model.feature_info, self.out_indices)
        return self


def create_features(model: EmbeddingNet, out_indices: Any, feature_cls: Optional[str] = None,
                    feature_cfg: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The ``features_only`` model of ``model``: its backbone's feature maps at ``out_indices``.

    Both the supernet and static sub-models have ``forward_intermediates``, so timm's getter wrapper serves both; the
    layers after the last level asked for, the neck and the classifier are pruned away.

    Raises:
        ValueError: a ``feature_cls`` other than timm's ``getter``.
    """
    feature_cls = (feature_cfg or {}).get('feature_cls', feature_cls)
    if feature_cls not in (None, 'getter'):
        raise ValueError(f"feature_cls={feature_cls!r} is not supported by sfsc_* models; they use timm's 'getter' "
                         '(forward_intermediates), the default.')
    if isinstance(model, SwitchableEmbeddingNet):
        return SwitchableFeatures(model, out_indices)
    return FeatureGetterNet(model, out_indices=out_indices)

