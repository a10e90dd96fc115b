""" Reports over a compatibility matrix: summary, self-compatibility check, paper-style table and heatmap.

`M[q][g]` is the mAP (a fraction in [0, 1]) with queries embedded by the sub-model of width `widths[q]` and the
gallery by the one of width `widths[g]`; widths are sorted ascending, e.g. `(0.25, 0.5, 0.75, 1.0)`. Sub-models are
labelled by their share of the parameters, `width ** 2` (conv weights shrink in both channel dimensions), as in the
SFSC paper: `φ_1/16, φ_1/4, φ_9/16, φ`.
"""
import numbers
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..atomic_io import write_file_atomically

__all__ = ['parameter_share_label', 'summarize_compatibility', 'diagonal_and_cross_width_means',
           'format_compatibility_table', 'plot_compatibility_heatmap']

_CORNER = 'query \\ gallery'


def parameter_share_label(width: float) -> str:
    """Label of a sub-model by its parameter share `width ** 2`: 0.5 -> 'φ_1/4', 0.75 -> 'φ_9/16', 1.0 -> 'φ'.

    Widths that are not simple fractions are approximated by the nearest fraction with denominator <= 1000 first.
    """
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < width <= 1:
        raise ValueError(f'width must be a number in (0, 1], got {width!r}.')
    share = Fraction(float(width)).limit_denominator(1000) ** 2
    return 'φ' if share == 1 else f'φ_{share.numerator}/{share.denominator}'


def _as_matrix(matrix: Any, widths: Sequence[float]) -> np.ndarray:
    """Check `matrix` against `widths` and return it as a float64 `(m, m)` array."""
    if hasattr(matrix, 'detach'):  # torch tensor, without importing torch here
        matrix = matrix.detach().cpu().numpy()
    try:
        values = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError('The compatibility matrix must be a square list of lists / array of numbers.') from None
    widths = list(widths)
    if len(widths) == 0:
        raise ValueError('widths is empty: give one width per row/column of the matrix.')
    if any(b <= a for a, b in zip(widths, widths[1:])):
        raise ValueError(f'widths must be strictly ascending (narrowest first), got {widths}.')
    for width in widths:
        parameter_share_label(width)  # validates the range
    if values.shape != (len(widths), len(widths)):
        raise ValueError(
            f'The compatibility matrix has shape {values.shape} but {len(widths)} widths were given: '
            f'M must be ({len(widths)}, {len(widths)}) with rows = query width, columns = gallery width.')
    if not np.isfinite(values).all():
        raise ValueError('The compatibility matrix contains NaN or inf.')
    if values.min() < 0 or values.max() > 1:
        raise ValueError(
            f'Matrix values must be mAP fractions in [0, 1], got range [{values.min():g}, {values.max():g}]. '
            f'If these are percentages, divide by 100.')
    return values


def diagonal_and_cross_width_means(matrix: Any) -> Tuple[float, Optional[float]]:
    """(mean of the diagonal: each width on its own gallery, mean of the off-diagonal entries: across widths, None for
    a single width) of a square matrix, in its own units; their difference is the matrix's compatibility gap."""
    if hasattr(matrix, 'detach'):  # torch tensor, without importing torch here
        matrix = matrix.detach().cpu().numpy()
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.size == 0:
        raise ValueError(f'Expected a square (m, m) matrix, got shape {values.shape}.')
    off_diagonal = ~np.eye(len(values), dtype=bool)
    return float(values.diagonal().mean()), (float(values[off_diagonal].mean()) if off_diagonal.any() else None)


def summarize_compatibility(matrix: Any, widths: Sequence[float]) -> Dict[str, Any]:
    """Mean of the matrix and the self-compatibility criterion `M[q][g] >= M[q][q]` for every g wider than q.

    Args:
        matrix: `(m, m)` mAP values, rows = query width, columns = gallery width (list of lists, array or tensor).
        widths: The m widths, ascending.

    Returns:
        Dict with `mean` (float), `diagonal_mean` and `cross_width_mean` (:func:`diagonal_and_cross_width_means`),
        `self_compatible` (bool), `violations` (list of `(query_width, gallery_width)` pairs where the wider gallery
        scores below the query model's own gallery), `matrix` (nested list of floats) and `widths` (list).
    """
    values = _as_matrix(matrix, widths)
    widths = [float(w) for w in widths]
    violations = [
        (widths[q], widths[g])
        for q in range(len(widths)) for g in range(q + 1, len(widths))
        if values[q, g] < values[q, q]
    ]
    diagonal_mean, cross_width_mean = diagonal_and_cross_width_means(values)
    return {
        'mean': float(values.mean()),
        'diagonal_mean': diagonal_mean,
        'cross_width_mean': cross_width_mean,
        'self_compatible': not violations,
        'violations': violations,
        'matrix': values.tolist(),
        'widths': widths,
    }


def format_compatibility_table(matrix: Any, widths: Sequence[float], fmt: str = 'text') -> str:
    """The matrix as the SFSC paper lays it out: rows = query model, columns = gallery model, mAP in percent.

    Args:
        matrix: `(m, m)` mAP fractions.
        widths: The m widths, ascending.
        fmt: 'text' (aligned plain text) or 'markdown' (a pipe table, e.g. for a model card).

    Returns:
        The table, without a trailing newline.
    """
    if fmt not in ('text', 'markdown'):
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}.")
    values = _as_matrix(matrix, widths)
    labels = [parameter_share_label(w) for w in widths]
    header = [_CORNER] + labels
    body = [[label] + [f'{100 * v:.2f}' for v in row] for label, row in zip(labels, values)]
    if fmt == 'markdown':
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join([' --- '] + [' ---: '] * len(labels)) + '|']
        lines += ['| ' + ' | '.join(row) + ' |' for row in body]
        return '\n'.join(lines)
    column_widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = []
    for row in [header] + body:
        cells = [row[0].ljust(column_widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], column_widths[1:])]
        lines.append('  '.join(cells).rstrip())
    return '\n'.join(lines)


def plot_compatibility_heatmap(
        matrix: Any,
        widths: Sequence[float],
        path: Union[str, Path],
        title: Optional[str] = None,
) -> Path:
    """Save the matrix as an annotated heatmap PNG (mAP in percent per cell), written atomically.

    Uses matplotlib's object API on an Agg canvas, so it never touches pyplot state or needs a display.

    Args:
        matrix: `(m, m)` mAP fractions.
        widths: The m widths, ascending.
        path: Output file; parent folders are created.
        title: Optional figure title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = _as_matrix(matrix, widths)
    labels = [parameter_share_label(w) for w in widths]
    size = len(labels)
    figure = Figure(figsize=(1.2 * size + 2.2, 1.1 * size + 1.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(100 * values, cmap='viridis', vmin=100 * values.min(), vmax=100 * values.max())
    figure.colorbar(image, ax=axes, label='mAP (%)')
    axes.set_xticks(range(size), labels)
    axes.set_yticks(range(size), labels)
    axes.set_xlabel('gallery model')
    axes.set_ylabel('query model')
    if title:
        axes.set_title(title)
    middle = 100 * (values.min() + values.max()) / 2
    for q in range(size):
        for g in range(size):
            # dark text on the bright (high) end of viridis, light text on the dark end
            color = 'black' if 100 * values[q, g] > middle else 'white'
            axes.text(g, q, f'{100 * values[q, g]:.2f}', ha='center', va='center', color=color, fontsize=9)
    figure.tight_layout()

    # a reader never sees a half-written PNG
    return write_file_atomically(path, lambda temp: figure.savefig(temp, format='png'))
