"""The parts after the backbone: the BNNeck to D dimensions and the classifier shared by every width."""
from typing import Optional

import torch
from torch import nn
from timm.layers import SelectAdaptivePool2d


class EmbeddingNeck(nn.Module):
    """BNNeck (Luo et al. 2019): Linear to D without bias, then BatchNorm1d.

    On pooled features (B, C) it gives the (B, D) embedding. With ``spatial`` (set by the network when its backbone
    does not pool, ``global_pool=''``) it embeds every position of the map (B, C, H, W): (B, D, H, W), whose spatial
    mean equals the embedding of the average-pooled map in eval mode (both layers are affine).
    """

    def __init__(self, fc: nn.Module, bn: nn.Module, spatial: bool = False):
        super().__init__()
        self.fc = fc
        self.bn = bn
        self.spatial = spatial  # an attribute, not the input's ndim: torch.fx traces no branch on a tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            b, _, h, w = x.shape
            x = self.fc(x.flatten(2).transpose(1, 2))  # (B, H*W, D)
            x = self.bn(x.transpose(1, 2))  # BatchNorm1d normalises (B, D, L) per channel
            return x.reshape(b, -1, h, w)
        return self.bn(self.fc(x))


def create_head(embed_dim: int, num_classes: int, device=None, init: bool = True) -> nn.Module:
    """The shared classifier: Linear(D -> classes), Identity for 0 classes; initialised by :func:`init_head`."""
    if num_classes <= 0:
        return nn.Identity()
    head = nn.Linear(embed_dim, num_classes, device=device)
    if init:
        init_head(head)
    return head


def init_head(head: nn.Module) -> None:
    """Small normal weights and zero bias (the strong re-ID baseline's classifier initialisation)."""
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.001)
        nn.init.zeros_(head.bias)


def check_pooling(global_pool: Optional[str], num_classes: int) -> None:
    """Raise a ValueError for a pooling the neck cannot take: one that changes the channel count, or none at all
    in front of a classifier (as timm requires).
    """
    if global_pool is None:
        return
    try:
        multiplier = SelectAdaptivePool2d(pool_type=global_pool).feat_mult()
    except (AssertionError, ValueError):
        raise ValueError(f'unknown global_pool {global_pool!r}; use avg, max, avgmax, fast or \'\' (none).') from None
    if multiplier != 1:
        raise ValueError(f'global_pool={global_pool!r} multiplies the channels by {multiplier}, but the neck is sized '
                         'for the backbone\'s channels; use avg, max, avgmax, fast or \'\' (none).')
    if not global_pool and num_classes > 0:
        raise ValueError('global_pool=\'\' (no pooling) gives an embedding per position, which a classifier cannot '
                         'take: pass num_classes=0 with it, e.g. reset_classifier(0, global_pool=\'\').')
