"""The one channel rule shared by every switchable layer.

At width ``w`` a layer with ``c`` full-width channels uses its leading ``make_divisible(c * w, 8)`` channels. Because
every layer applies the same rule to the same full-width count, the two inputs of a residual addition always agree,
so no graph analysis is needed (docs/design.md, "Widths and the channel rule").
"""
import math
import numbers
from typing import Any, Iterable, Optional, Sequence, Tuple

from timm.layers import make_divisible

CHANNEL_DIVISOR = 8
DEFAULT_WIDTHS: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)


def check_width(width: Any, widths: Optional[Sequence[float]] = None, owner: str = 'this network') -> float:
    """The one width check: a number in (0, 1] (Python or numpy), and one of ``widths`` when they are given.

    Args:
        width: the width multiplier to check.
        widths: the widths ``owner`` was built (and trained) with; None to check the number only.
        owner: what has those widths, for the message (e.g. ``'this network'``, ``'the checkpoint'``).

    Returns:
        ``width`` as a Python float.

    Raises:
        ValueError: naming the bad width and, for one not in ``widths``, the widths to choose from.
    """
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width):
        raise ValueError(f'width must be a number in (0, 1], got {width!r}.')
    if not 0.0 < width <= 1.0:
        raise ValueError(f'width must be in (0, 1] (1.0 is the full network), got {width}.')
    width = float(width)
    if widths is not None and width not in widths:
        raise ValueError(f'width {width:g} is not one of the widths {tuple(widths)} of {owner}; it has no BatchNorm '
                         f'statistics for it. Choose one of {tuple(widths)}.')
    return width


def check_widths(widths: Iterable[float]) -> Tuple[float, ...]:
    """Validate a width set: sorted ascending, unique, each in (0, 1], and containing the full width 1.0.

    The full width is required because the switchable layers store full-width weights under timm's own key names
    and every narrower width is a leading slice of them.
    """
    if isinstance(widths, (str, bytes)) or isinstance(widths, numbers.Real):
        # a string would be iterated character by character ('0', '.', '5', ...)
        raise ValueError(f'widths must be a sequence of numbers, got {widths!r}; e.g. widths=(0.25, 0.5, 0.75, 1.0) '
                         '(in config.json: [0.25, 0.5, 0.75, 1.0]).')
    values = tuple(sorted({check_width(w) for w in widths}))
    if not values:
        raise ValueError('widths must name at least one width, e.g. widths=(0.25, 0.5, 0.75, 1.0).')
    if values[-1] != 1.0:
        raise ValueError(f'widths must include the full width 1.0, got {values}; e.g. widths=(0.25, 0.5, 0.75, 1.0).')
    return values


def width_channels(channels: int, width: float) -> int:
    """Channels a layer with ``channels`` full-width channels uses at ``width``."""
    if width == 1.0:
        return channels
    return min(channels, make_divisible(channels * width, CHANNEL_DIVISOR))


def width_key(width: float) -> str:
    """Name of a width inside a state_dict key (``0.25 -> '0_25'``); ``.`` would break module paths."""
    return f'{width:g}'.replace('.', '_')


def key_width(key: str) -> float:
    """Inverse of :func:`width_key`."""
    return float(key.replace('_', '.'))
