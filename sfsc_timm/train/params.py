""" Which parameters all widths share and which belong to one width (its private BatchNorm). """
from typing import Dict, List, Sequence, Tuple

from torch import nn

from ..layers import key_width, static_state_map

__all__ = ['private_params_by_width', 'shared_params', 'width_gradient_supports']


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


def width_gradient_supports(net: nn.Module, widths: Sequence[float]) -> Dict[nn.Parameter, List[Tuple[slice, ...]]]:
    """Where each width's gradient of each parameter can be non-zero, for ``GradientProjection(supports=...)``.

    At width ``w`` a switchable layer computes with the leading slice of its full-width weight that its static
    counterpart holds (``static_state_map``), so a backward pass at ``w`` leaves the rest of the weight's gradient
    zero. Returns ``{param: [index at widths[0], index at widths[1], ...]}``; parameters a width does not slice get
    ``()`` (the whole tensor).
    """
    params = dict(net.named_parameters())
    supports: Dict[nn.Parameter, List[Tuple[slice, ...]]] = {p: [()] * len(widths) for p in params.values()}
    for task, width in enumerate(widths):
        for source, index in static_state_map(net, width).values():
            if source in params:
                supports[params[source]][task] = tuple(index)
    return supports
