"""The contract every switchable layer fulfils: dynamic at training time, static on demand (mmrazor's idea)."""
from typing import Dict, Tuple

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

    def set_width(self, width: float) -> None:
        """Make ``width`` the width used by ``forward``."""
        raise NotImplementedError

    def to_static(self, width: float) -> nn.Module:
        """A plain torch layer of the shape this layer has at ``width``, on the meta device (no storage)."""
        raise NotImplementedError

    def static_state_map(self, width: float) -> Dict[str, SliceSpec]:
        """For each state_dict key of ``to_static(width)``: where its values live in this layer's state_dict."""
        raise NotImplementedError
