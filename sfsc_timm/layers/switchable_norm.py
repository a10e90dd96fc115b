"""Switchable BatchNorm: a private BatchNorm per width (Slimmable Networks, Yu et al. 2019).

Batch statistics of a narrow sub-network differ from the full network's, so each width keeps its own affine
parameters and running statistics. The full width uses the layer's own tensors, which keep ``nn.BatchNorm2d``'s key
names; width ``w < 1`` lives under ``per_width.<key>`` (e.g. ``bn1.per_width.0_25.running_mean``).
"""
import copy
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import BatchNormAct2d

from .base import SliceSpec, SwitchableLayer
from .channels import check_width, check_widths, width_channels, width_key


def _plain_bn(bn_cls, num_features: int, like: nn.modules.batchnorm._BatchNorm, device) -> nn.Module:
    return bn_cls(num_features, eps=like.eps, momentum=like.momentum, affine=like.affine,
                  track_running_stats=like.track_running_stats, device=device, dtype=_dtype_of(like))


def _dtype_of(bn: nn.modules.batchnorm._BatchNorm):
    tensor = bn.weight if bn.weight is not None else bn.running_mean
    return tensor.dtype if tensor is not None else None


class _PerWidthNorm(SwitchableLayer):
    """Shared logic of the switchable BatchNorm classes (static mixin: no runtime class creation)."""

    plain_cls = nn.BatchNorm2d

    def _init_per_width(self, widths: Sequence[float], slice_channels: bool) -> None:
        self.widths = check_widths(widths)
        self.slice_channels = slice_channels
        device = self.weight.device if self.weight is not None else None
        self.per_width = nn.ModuleDict({
            width_key(w): _plain_bn(self.plain_cls, self._channels_at(w), self, device)
            for w in self.widths if w != 1.0
        })
        self._copy_full_to_narrow()
        self.set_width(1.0)

    def _channels_at(self, width: float) -> int:
        return width_channels(self.num_features, width) if self.slice_channels else self.num_features

    @torch.no_grad()
    def _copy_full_to_narrow(self) -> None:
        # Narrow BNs start as slices of the full one, so initialisations like timm's zero_init_last carry over.
        for key, bn in self.per_width.items():
            for name, tensor in list(bn.named_parameters()) + list(bn.named_buffers()):
                source = getattr(self, name)
                tensor.copy_(source if tensor.ndim == 0 else source[:tensor.shape[0]])

    def set_width(self, width: float) -> None:
        self.active_width = check_width(width, self.widths, owner='this layer')
        self.active_key = width_key(self.active_width)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm at the active width: the layer's own tensors at full width, else that width's private one."""
        if self.active_width == 1.0:
            return self._full_width_norm(x)
        out = x
        for key, bn in self.per_width.items():  # TorchScript indexes a ModuleDict by constants only; a loop scripts
            if key == self.active_key:
                out = bn(x)
        return out

    def _full_width_norm(self, x: torch.Tensor) -> torch.Tensor:
        # nn.BatchNorm's own forward, written out because TorchScript compiles no super() call (as timm's
        # BatchNormAct2d does); the ifs on attributes that may be None are how TorchScript skips them
        factor = 0.0
        if self.momentum is not None:
            factor = self.momentum
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            x, self.running_mean if use_running else None, self.running_var if use_running else None,
            self.weight, self.bias, batch_stats, factor, self.eps)

    def to_static(self, width: float) -> nn.Module:
        return _plain_bn(self.plain_cls, self._channels_at(width), self, 'meta')

    def static_state_map(self, width: float) -> Dict[str, SliceSpec]:
        prefix = '' if width == 1.0 else f'per_width.{width_key(width)}.'
        module = self if width == 1.0 else self.per_width[width_key(width)]
        names = [n for n, _ in module.named_parameters(recurse=False)] + \
                [n for n, b in module.named_buffers(recurse=False) if b is not None]
        return {name: (prefix + name, ()) for name in names}

    @classmethod
    def _from_bn(cls, bn, widths: Sequence[float], slice_channels: bool, **extra):
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats, widths=widths, slice_channels=slice_channels,
                  device=bn.weight.device if bn.weight is not None else None, dtype=_dtype_of(bn), **extra)
        with torch.no_grad():
            for name, tensor in list(bn.named_parameters(recurse=False)) + list(bn.named_buffers(recurse=False)):
                if tensor is not None:
                    getattr(new, name).copy_(tensor)
        new._copy_full_to_narrow()
        return new


class SwitchableBatchNorm2d(nn.BatchNorm2d, _PerWidthNorm):
    """``nn.BatchNorm2d`` with a private BatchNorm per width; channels follow the channel rule."""

    plain_cls = nn.BatchNorm2d

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, widths: Sequence[float], slice_channels: bool = True,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self._init_per_width(widths, slice_channels)

    @classmethod
    def convert_from(cls, bn: nn.BatchNorm2d, widths: Sequence[float],
                     slice_in: bool = True) -> 'SwitchableBatchNorm2d':
        """Switchable copy of ``bn``: its tensors become the full width, narrow widths start as their slices."""
        return cls._from_bn(bn, widths, slice_channels=slice_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(x)


class SwitchableBatchNorm1d(nn.BatchNorm1d, _PerWidthNorm):
    """``nn.BatchNorm1d`` with a private BatchNorm per width (the BNNeck; ``slice_channels=False`` keeps D)."""

    plain_cls = nn.BatchNorm1d

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, widths: Sequence[float], slice_channels: bool = True,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self._init_per_width(widths, slice_channels)

    @classmethod
    def convert_from(cls, bn: nn.BatchNorm1d, widths: Sequence[float],
                     slice_in: bool = True) -> 'SwitchableBatchNorm1d':
        """Switchable copy of ``bn``: its tensors become the full width, narrow widths start as their slices."""
        return cls._from_bn(bn, widths, slice_channels=slice_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(x)


class SwitchableBatchNormAct2d(BatchNormAct2d, _PerWidthNorm):
    """timm's ``BatchNormAct2d`` (BatchNorm, then drop and activation) with a private BatchNorm per width."""

    plain_cls = nn.BatchNorm2d

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, widths: Sequence[float], slice_channels: bool = True,
                 act: nn.Module, drop: nn.Module, device=None, dtype=None):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, apply_act=False, device=device, dtype=dtype)
        self.drop = drop
        self.act = act
        self._init_per_width(widths, slice_channels)

    @classmethod
    def convert_from(cls, bn: BatchNormAct2d, widths: Sequence[float],
                     slice_in: bool = True) -> 'SwitchableBatchNormAct2d':
        """Switchable copy of ``bn``, sharing its activation and drop modules."""
        return cls._from_bn(bn, widths, slice_channels=slice_in, act=bn.act, drop=bn.drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self._norm(x)))

    def to_static(self, width: float) -> BatchNormAct2d:
        static = BatchNormAct2d(self._channels_at(width), eps=self.eps, momentum=self.momentum, affine=self.affine,
                                track_running_stats=self.track_running_stats, apply_act=False, device='meta',
                                dtype=_dtype_of(self))
        static.drop = copy.deepcopy(self.drop)
        static.act = copy.deepcopy(self.act)
        return static
