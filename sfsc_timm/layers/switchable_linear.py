"""Switchable linear layer: the leading ``[:out_w, :in_w]`` slice of one full-width weight."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SliceSpec, SwitchableLayer
from .channels import check_width, check_widths, width_channels


class SwitchableLinear(nn.Linear, SwitchableLayer):
    """``nn.Linear`` whose input and/or output features shrink with the active width.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        widths: the widths this layer can switch to.
        slice_in: slice input features (True behind a switchable backbone).
        slice_out: slice output features (False for the embedding projection: D is the same at every width).
    """

    def __init__(
            self,
            in_features: int,
            out_features: int,
            bias: bool = True,
            *,
            widths: Sequence[float],
            slice_in: bool = True,
            slice_out: bool = True,
            device=None,
            dtype=None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.widths = check_widths(widths)
        self.slice_in = slice_in
        self.slice_out = slice_out
        self.set_width(1.0)

    @classmethod
    def convert_from(cls, linear: nn.Linear, widths: Sequence[float], slice_in: bool = True,
                     slice_out: bool = True) -> 'SwitchableLinear':
        """Wrap an existing linear layer, sharing (not copying) its parameters."""
        if type(linear) is not nn.Linear:
            raise TypeError(f'{type(linear).__name__} is not a plain nn.Linear; it has no switchable counterpart.')
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, widths=widths,
                  slice_in=slice_in, slice_out=slice_out, device='meta', dtype=linear.weight.dtype)
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def _shape_at(self, width: float):
        in_w = width_channels(self.in_features, width) if self.slice_in else self.in_features
        out_w = width_channels(self.out_features, width) if self.slice_out else self.out_features
        return in_w, out_w

    def set_width(self, width: float) -> None:
        self.active_width = width = check_width(width, self.widths, owner='this layer')
        self.active_in, self.active_out = self._shape_at(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_width == 1.0:
            return F.linear(x, self.weight, self.bias)
        bias = self.bias
        if bias is not None:
            bias = bias[:self.active_out]
        return F.linear(x, self.weight[:self.active_out, :self.active_in], bias)

    def to_static(self, width: float) -> nn.Linear:
        in_w, out_w = self._shape_at(width)
        return nn.Linear(in_w, out_w, bias=self.bias is not None, device='meta', dtype=self.weight.dtype)

    def static_state_map(self, width: float) -> Dict[str, SliceSpec]:
        in_w, out_w = self._shape_at(width)
        spec = {'weight': ('weight', (slice(0, out_w), slice(0, in_w)))}
        if self.bias is not None:
            spec['bias'] = ('bias', (slice(0, out_w),))
        return spec

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, widths={self.widths}, slice_in={self.slice_in}, slice_out={self.slice_out}'
