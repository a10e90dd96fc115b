"""Turn a timm CNN into its switchable form, and a switchable network back into a static one at one width.

Conversion is a table from plain layer type to switchable class (:data:`SWITCHABLE_LAYERS`), each class built by its
one constructor ``convert_from``; a new layer type is one entry. Modules that hold no tensors of their own are left
as they are; any other module holding parameters must have an entry, or conversion fails loudly.
"""
import copy
from typing import Callable, Dict, Iterable, Sequence, Tuple, Type

import torch
from torch import nn
from timm.layers import BatchNormAct2d

from .base import SliceSpec, SwitchableLayer
from .channels import check_widths
from .switchable_conv import SwitchableConv2d
from .switchable_linear import SwitchableLinear
from .switchable_norm import SwitchableBatchNorm1d, SwitchableBatchNorm2d, SwitchableBatchNormAct2d

__all__ = ['SWITCHABLE_LAYERS', 'convert_to_switchable', 'switchable_layers', 'meta_copy', 'static_skeleton',
           'static_state_map', 'to_static']

# exact type -> switchable class: a subclass of a plain layer may compute something else, so it is not matched
SWITCHABLE_LAYERS: Dict[Type[nn.Module], Type[SwitchableLayer]] = {
    nn.Conv2d: SwitchableConv2d,
    nn.Linear: SwitchableLinear,
    nn.BatchNorm1d: SwitchableBatchNorm1d,
    nn.BatchNorm2d: SwitchableBatchNorm2d,
    BatchNormAct2d: SwitchableBatchNormAct2d,
}


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _switchable_counterpart(module: nn.Module, widths: Tuple[float, ...], slice_in: bool):
    if isinstance(module, SwitchableLayer):
        return module
    switchable = SWITCHABLE_LAYERS.get(type(module))
    return None if switchable is None else switchable.convert_from(module, widths, slice_in=slice_in)


def convert_to_switchable(
        model: nn.Module,
        widths: Sequence[float],
        input_layers: Iterable[str] = (),
) -> nn.Module:
    """Swap every conv, linear and BatchNorm of ``model`` for its switchable counterpart, in place.

    Parameters are shared with the original layers, not copied. The layers named in ``input_layers`` read the image
    and keep their input channels.

    Args:
        model: a timm CNN, typically built with ``num_classes=0``.
        widths: the widths the network will switch between (must include 1.0).
        input_layers: module names of the layers that read the input image (timm's ``first_conv``).

    Returns:
        The same ``model`` object, converted.

    Raises:
        TypeError: if a module holds parameters but has no switchable counterpart.
    """
    widths = check_widths(widths)
    input_layers = set(input_layers)
    unknown = input_layers - {name for name, _ in model.named_modules()}
    if unknown:
        raise ValueError(f'input layers {sorted(unknown)} are not modules of {type(model).__name__}.')
    for name, module in list(model.named_modules()):
        if not name:
            continue
        new = _switchable_counterpart(module, widths, slice_in=name not in input_layers)
        if new is not None:
            if new is not module:
                _replace_module(model, name, new)
        elif any(True for _ in module.parameters(recurse=False)):
            supported = ', '.join(t.__name__ for t in SWITCHABLE_LAYERS)
            raise TypeError(
                f'{name} ({type(module).__name__}) holds parameters but has no switchable counterpart; supported '
                f'layers: {supported} (add an entry to sfsc_timm.layers.SWITCHABLE_LAYERS for another type).')
    return model


def switchable_layers(model: nn.Module) -> Dict[str, SwitchableLayer]:
    """All switchable layers of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SwitchableLayer)}


def meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose parameters and persistent buffers are storage-free meta tensors.

    Used to build static skeletons without duplicating (or, when loading, ever materialising) the full weights.
    """
    persistent = set(id(t) for t in model.state_dict(keep_vars=True).values())
    memo = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in persistent or id(tensor) in memo:
            continue
        meta = torch.empty_like(tensor, device='meta')
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def static_skeleton(model: nn.Module, width: float) -> nn.Module:
    """Copy of ``model`` with every switchable layer replaced by a plain layer of its shape at ``width`` (meta)."""
    if isinstance(model, SwitchableLayer):
        return model.to_static(width)
    skeleton = meta_copy(model)
    for name, layer in switchable_layers(skeleton).items():
        _replace_module(skeleton, name, layer.to_static(width))
    return skeleton


def static_state_map(model: nn.Module, width: float) -> Dict[str, SliceSpec]:
    """For each key of the static model's state_dict at ``width``: its key and slice in ``model``'s state_dict."""
    mapping: Dict[str, SliceSpec] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        if isinstance(module, SwitchableLayer):
            # the layer knows its own per-width layout, including its per_width children
            for key, (source, index) in module.static_state_map(width).items():
                mapping[prefix + key] = (prefix + source, index)
            return
        for key, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is not None and key not in module._non_persistent_buffers_set:
                mapping[prefix + key] = (prefix + key, ())
        for name, child in module._modules.items():
            if child is not None:
                visit(child, f'{prefix}{name}.')

    visit(model, '')
    return mapping


def to_static(model: nn.Module, width: float, read: Callable[[str, Tuple[slice, ...]], torch.Tensor]) -> nn.Module:
    """Static model at ``width`` whose tensors are read through ``read(key, index)`` from the switchable state.

    ``read`` is where the tensors come from: the switchable model's own state_dict (``extract``) or a safetensors
    file read slice by slice (loading one width without reading the rest of the checkpoint).
    """
    skeleton = static_skeleton(model, width)
    state = {key: read(source, index) for key, (source, index) in static_state_map(model, width).items()}
    skeleton.load_state_dict(state, strict=True, assign=True)
    return skeleton
