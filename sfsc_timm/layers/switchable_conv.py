"""Switchable 2-D convolution: the leading ``[:out_w, :in_w]`` slice of one full-width weight."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SliceSpec, SwitchableLayer
from .channels import check_width, check_widths, width_channels


class SwitchableConv2d(nn.Conv2d, SwitchableLayer):
    """``nn.Conv2d`` whose input and output channels shrink with the active width.

    Plain convs (``groups == 1``) slice input and output channels; depthwise convs (``groups == in == out``) slice
    their groups together with their channels. Other grouped convs have no consistent rule and are rejected.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as ``nn.Conv2d``.
        widths: the widths this layer can switch to.
        slice_in: slice input channels (False for the conv that reads the image).
        slice_out: slice output channels.
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size,
            stride=1,
            padding=0,
            dilation=1,
            groups: int = 1,
            bias: bool = True,
            *,
            widths: Sequence[float],
            slice_in: bool = True,
            slice_out: bool = True,
            device=None,
            dtype=None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=bias, device=device, dtype=dtype)
        self.depthwise = groups > 1 and groups == in_channels == out_channels
        if groups > 1 and not self.depthwise:
            raise ValueError(
                f'Grouped conv with groups={groups}, in={in_channels}, out={out_channels} cannot be switched: only '
                'plain (groups=1) and depthwise (groups == in == out) convs follow the channel rule.')
        if self.depthwise and slice_in != slice_out:
            raise ValueError('A depthwise conv slices its input and output channels together.')
        self.widths = check_widths(widths)
        self.slice_in = slice_in
        self.slice_out = slice_out
        self.set_width(1.0)

    @classmethod
    def convert_from(cls, conv: nn.Conv2d, widths: Sequence[float], slice_in: bool = True) -> 'SwitchableConv2d':
        """Wrap an existing conv, sharing (not copying) its parameters."""
        if type(conv) is not nn.Conv2d:
            raise TypeError(f'{type(conv).__name__} is not a plain nn.Conv2d; it has no switchable counterpart.')
        if conv.padding_mode != 'zeros':
            raise ValueError(f'padding_mode={conv.padding_mode!r} is not supported by SwitchableConv2d (only zeros).')
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None, widths=widths, slice_in=slice_in,
            slice_out=True, device='meta', dtype=conv.weight.dtype)
        new.weight = conv.weight
        new.bias = conv.bias
        return new

    def _shape_at(self, width: float):
        in_w = width_channels(self.in_channels, width) if self.slice_in else self.in_channels
        out_w = width_channels(self.out_channels, width) if self.slice_out else self.out_channels
        groups = in_w if self.depthwise else 1
        return in_w, out_w, groups

    def set_width(self, width: float) -> None:
        self.active_width = width = check_width(width, self.widths, owner='this layer')
        self.active_in, self.active_out, self.active_groups = self._shape_at(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written without super() and without slicing an Optional inline, so that TorchScript compiles the supernet
        if self.active_width == 1.0:
            return self._conv_forward(x, self.weight, self.bias)
        weight = self.weight[:self.active_out, :self.active_in // self.active_groups]
        bias = self.bias
        if bias is not None:
            bias = bias[:self.active_out]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.active_groups)

    def to_static(self, width: float) -> nn.Conv2d:
        in_w, out_w, groups = self._shape_at(width)
        return nn.Conv2d(
            in_w, out_w, self.kernel_size, self.stride, self.padding, self.dilation, groups,
            bias=self.bias is not None, device='meta', dtype=self.weight.dtype)

    def static_state_map(self, width: float) -> Dict[str, SliceSpec]:
        in_w, out_w, groups = self._shape_at(width)
        spec = {'weight': ('weight', (slice(0, out_w), slice(0, in_w // groups)))}
        if self.bias is not None:
            spec['bias'] = ('bias', (slice(0, out_w),))
        return spec

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, widths={self.widths}, slice_in={self.slice_in}, slice_out={self.slice_out}'
