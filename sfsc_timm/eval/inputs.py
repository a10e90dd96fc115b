""" Input checking and conversion for the retrieval metrics.

Everything a user can hand to the metrics (torch tensors, numpy arrays, nested lists) is turned into torch tensors
here, and every mistake that would otherwise give silently wrong numbers becomes a `ValueError` that names the
argument, what was wrong and how to fix it.
"""
from typing import Any, Optional, Tuple

import numpy as np
import torch

__all__ = ['as_unit_embeddings', 'as_distances', 'as_id_pair', 'check_length']


def _to_tensor(values: Any, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    try:
        array = np.asarray(values)
    except ValueError:  # numpy refuses ragged nested lists
        array = np.empty(0, dtype=object)
    if array.dtype == object:
        raise ValueError(f'{name} could not be read as a regular array: ragged rows or mixed types?')
    if array.dtype.kind not in 'biuf':
        raise ValueError(f'{name} must hold numbers, got dtype {array.dtype}.')
    return torch.from_numpy(np.ascontiguousarray(array))  # a copy only for views with odd strides


def _check_finite(values: torch.Tensor, name: str, hint: str) -> None:
    finite = torch.isfinite(values)
    if not finite.all():
        bad = ~finite
        bad_rows = torch.nonzero(bad.reshape(bad.shape[0], -1).any(1)).flatten()
        shown = bad_rows[:5].tolist()
        more = ', ...' if bad_rows.numel() > 5 else ''
        raise ValueError(
            f'{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf) in {bad_rows.numel()} row(s), '
            f'first rows: {shown}{more}. {hint}')


def as_unit_embeddings(values: Any, name: str) -> torch.Tensor:
    """Check a `(N, D)` embedding matrix (N >= 1, all finite) and return it L2-normalised, as float32 on the CPU.

    float32 is used whatever the input precision so that every entry point (functions, `evaluate` module) ranks with
    bit-identical distances. All-zero rows stay zero (distance 1 to everything).
    """
    embeddings = _to_tensor(values, name)
    if embeddings.dim() != 2:
        raise ValueError(
            f'{name} must be 2-D (num_items, dim), got shape {tuple(embeddings.shape)}. '
            f'For a single embedding use x.reshape(1, -1); for feature maps pool or flatten them first.')
    if embeddings.shape[0] == 0:
        raise ValueError(f'{name} is empty (shape {tuple(embeddings.shape)}): pass at least one embedding.')
    if embeddings.shape[1] == 0:
        raise ValueError(f'{name} has embedding dimension 0 (shape {tuple(embeddings.shape)}).')
    if embeddings.is_complex():
        raise ValueError(f'{name} must hold real numbers, got dtype {embeddings.dtype}.')
    embeddings = embeddings.to(torch.float32)
    norms = torch.linalg.vector_norm(embeddings, dim=1)
    # NaN and inf propagate into the row norms, which are needed anyway: the full scan runs only on failure
    if not torch.isfinite(norms).all():
        _check_finite(embeddings, name, 'Check the model output (e.g. fp16 overflow) or drop those rows.')
        raise ValueError(f'{name} has rows whose L2 norm overflows float32; scale the embeddings down.')
    return embeddings / norms.clamp_min(1e-12)[:, None]


def as_distances(values: Any) -> torch.Tensor:
    """A `(Q, G)` floating CPU tensor without NaN (inf is allowed: it ranks last); float64 input stays float64."""
    distances = _to_tensor(values, 'distances')
    if distances.dim() != 2:
        raise ValueError(f'distances must be 2-D (num_query, num_gallery), got shape {tuple(distances.shape)}.')
    if distances.shape[0] == 0 or distances.shape[1] == 0:
        raise ValueError(
            f'distances is empty (shape {tuple(distances.shape)}): both the query and the gallery set need at '
            f'least one item.')
    if distances.dtype != torch.float64:
        distances = distances.to(torch.float32)
    nan_count = int(torch.isnan(distances).sum())
    if nan_count:
        raise ValueError(f'distances contains {nan_count} NaN value(s); NaN cannot be ranked. Fix the embeddings '
                         f'or distance function that produced them.')
    return distances.contiguous()


def _as_codes(values: Any, name: str) -> np.ndarray:
    """1-D numpy array of integers or strings (identity labels, camera ids, sample ids)."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f'{name} must be 1-D (one value per embedding row), got shape {array.shape}.')
    if array.dtype.kind not in 'biuUSO':
        raise ValueError(
            f'{name} must hold integers or strings, got dtype {array.dtype}. Convert float ids with .astype(int) '
            f'if they are whole numbers.')
    return array


def as_id_pair(
        query_values: Any,
        gallery_values: Any,
        name: str,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Query and gallery codes of one kind (labels, cameras, sample ids) as int64 tensors on a shared code book.

    Args:
        query_values: One value per query row, or None.
        gallery_values: One value per gallery row, or None.
        name: Kind of value, e.g. 'cameras'; used in messages as `query_<name>` / `gallery_<name>`.

    Returns:
        `(query_codes, gallery_codes)`, both None when neither side was given.
    """
    if query_values is None and gallery_values is None:
        return None, None
    if query_values is None or gallery_values is None:
        given, missing = ('query', 'gallery') if gallery_values is None else ('gallery', 'query')
        raise ValueError(
            f'{given}_{name} is given but {missing}_{name} is not: pass {name} for both query and gallery, '
            f'or for neither.')
    query_array = _as_codes(query_values, f'query_{name}')
    gallery_array = _as_codes(gallery_values, f'gallery_{name}')
    if query_array.dtype.kind in 'biu' and gallery_array.dtype.kind in 'biu':
        return torch.from_numpy(query_array.astype(np.int64)), torch.from_numpy(gallery_array.astype(np.int64))
    # strings (or a mix with ints): one joint code book, so equal values get equal codes on both sides
    try:
        _, codes = np.unique(
            np.concatenate([query_array.astype(str), gallery_array.astype(str)]), return_inverse=True)
    except TypeError as error:
        raise ValueError(f'query_{name} / gallery_{name} hold values that cannot be compared: {error}') from None
    codes = torch.from_numpy(codes.reshape(-1).astype(np.int64))
    return codes[:len(query_array)], codes[len(query_array):]


def check_length(codes: Optional[torch.Tensor], num_rows: int, codes_name: str, rows_name: str) -> None:
    """Raise when `codes` does not hold exactly one entry per row of `rows_name`."""
    if codes is not None and codes.numel() != num_rows:
        raise ValueError(
            f'{codes_name} has {codes.numel()} entries but {rows_name} has {num_rows} rows: give exactly one value '
            f'per {rows_name} row, in the same order.')
