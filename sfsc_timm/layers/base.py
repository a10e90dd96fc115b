"""The contract every switchable layer fulfils: converted from a plain layer, dynamic at training time, static on
demand (mmrazor's dynamic-op idea). Invariant, tested for every layer: at width ``w`` the switchable layer computes
exactly what ``to_static(w)`` loaded through ``static_state_map(w)`` computes."""
from typing import Dict, Sequence, Tuple

from torch import nn

# (key in the switchable layer's state_dict, index into that tensor) that fills one key of the static layer
SliceSpec = Tuple[str, Tuple[slice, ...]]


class SwitchableLayer:
    """Interface of a layer whose active width is switched by its network.

    A switchable layer holds full-width tensors (and per-width BatchNorm statistics). ``set_width`` is called by the
    owning network on every switchable layer, so the active width is plain per-layer state, never a global flag.
    """

    widths: Tuple[float, ...]
    active_width: float

    @classmethod
    def convert_from(cls, module: nn.Module, widths: Sequence[float], slice_in: bool = True) -> 'SwitchableLayer':
        """The switchable counterpart of the plain layer ``module``, sharing (not copying) its parameters where it can.

        Args:
            module: the plain layer (exactly the type this class is registered for in ``SWITCHABLE_LAYERS``).
            widths: the widths the layer will switch between (must include 1.0).
            slice_in: slice the input channels (False for a layer that reads the image).
        """
        raise NotImplementedError

    def set_width(self, width: float) -> None:
        """Make ``width`` the width used by ``forward``."""
        raise NotImplementedError

    def to_static(self, width: float) -> nn.Module:
        """A plain torch layer of the shape this layer has at ``width``, on the meta device (no storage)."""
        raise NotImplementedError

    def static_state_map(self, width: float) -> Dict[str, SliceSpec]:
        """For each state_dict key of ``to_static(width)``: where its values live in this layer's state_dict."""
        raise NotImplementedError
