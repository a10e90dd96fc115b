"""Switchable layers and the converter between timm CNNs, their switchable form and static sub-networks."""
from .base import SwitchableLayer
from .channels import DEFAULT_WIDTHS, check_width, check_widths, key_width, width_channels, width_key
from .convert import (
    SWITCHABLE_LAYERS, convert_to_switchable, meta_copy, static_skeleton, static_state_map, switchable_layers,
    to_static,
)
from .switchable_conv import SwitchableConv2d
from .switchable_linear import SwitchableLinear
from .switchable_norm import SwitchableBatchNorm1d, SwitchableBatchNorm2d, SwitchableBatchNormAct2d
