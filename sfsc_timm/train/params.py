""" Which parameters all widths share and which belong to one width (its private BatchNorm). """
from typing import Dict, List

from torch import nn

from ..layers import key_width

__all__ = ['private_params_by_width', 'shared_params']


def _is_switchable_norm(module: nn.Module) -> bool:
    # switchable norms hold the full width's affine params themselves and the narrower widths' in `per_width`
    return isinstance(getattr(module, 'per_width', None), nn.ModuleDict)


def private_params_by_width(net: nn.Module) -> Dict[float, List[nn.Parameter]]:
    """The parameters only one width uses: ``{width: [params]}``.

    A switchable BatchNorm's own ``weight`` / ``bias`` serve the full width 1.0; ``per_width.<key>`` holds width
    ``key``'s. Everything else (convolutions, linears, the shared head) is shared: narrower widths use leading slices.
    """
    private: Dict[float, List[nn.Parameter]] = {}
    for module in net.modules():
        if not _is_switchable_norm(module):
            continue
        private.setdefault(1.0, []).extend(module.parameters(recurse=False))
        for key, norm in module.per_width.items():
            private.setdefault(key_width(key), []).extend(norm.parameters())
    return private


def shared_params(net: nn.Module) -> List[nn.Parameter]:
    """Every trainable parameter that is not private to one width, in ``net.parameters()`` order."""
    private = {id(p) for params in private_params_by_width(net).values() for p in params}
    return [p for p in net.parameters() if p.requires_grad and id(p) not in private]
