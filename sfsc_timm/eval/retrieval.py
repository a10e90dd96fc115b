""" Retrieval / person re-identification metrics: mAP, CMC and mINP over an exact ranking of the whole gallery.

Protocol (docs/design.md, "Evaluation"; the Market-1501 / torchreid convention):
- embeddings are L2-normalised and compared by cosine distance `1 - <q, g>`; every gallery item is ranked, there is
  no top-k cut;
- with camera ids, gallery items that share the query's identity *and* camera are removed from that query's ranking
  (they would be trivially easy matches); same camera with another identity stays a negative;
- with sample ids, a gallery item with the query's own sample id is removed (query and gallery may share samples);
- a query with no positive left in the gallery is skipped and counted in `num_skipped_queries`; mAP, CMC and mINP
  average over the remaining (valid) queries.

Tie rule: a negative at exactly the same distance as a positive ranks *before* it (pessimistic); positives tied with
each other are interchangeable, so their order does not matter. Equivalently: a stable sort by
`(distance, is_positive)`. Unlike "ties by gallery index", the result does not depend on the gallery order, and a
collapsed model that maps everything to one point scores as badly as it should instead of winning by index luck.

Metrics for one valid query with positives at 1-based ranks `r_1 < ... < r_n` among its kept gallery items:
`AP = mean_k(k / r_k)`, CMC hit at rank k if `r_1 <= k`, `INP = n / r_n` (Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook", mINP).

How it runs: queries go through in blocks (bounded memory); each block's distance matrix is ranked exactly by the
vectorised core in `ranking.py` (sorted positives + one batched `searchsorted`, no full sort of gallery rows), which
keeps Market-1501 scale (3,368 x 15,913, dim 2048) to about 1.5 s on two idle CPU cores, most of it the matrix
product.
"""
from typing import Any, Dict, Optional

import torch

from .inputs import as_distances, as_id_pair, as_unit_embeddings, check_length
from .ranking import CodeMatches, QueryMatches, concat_scores, score_queries, summarize_query_scores

__all__ = ['retrieval_metrics', 'rank_metrics_from_distances']

# elements of one (chunk, gallery) block when chunk_size is None: ~16 MB of float32 distances, ~100 MB of
# temporaries in all; on two cores larger blocks were not faster (Market-1501 scale: 263 queries per block)
_AUTO_CHUNK_ELEMENTS = 1 << 22


def _check_count(value: Any, name: str, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer{" or None" if allow_none else ""}, got {value!r}.')


def _prepare_matches(
        num_query: int,
        num_gallery: int,
        query_labels: Any,
        gallery_labels: Any,
        query_cameras: Any,
        gallery_cameras: Any,
        query_ids: Any,
        gallery_ids: Any,
        query_rows_name: str,
        gallery_rows_name: str,
) -> QueryMatches:
    """Check labels, cameras and sample ids of both sides and index which gallery items match each query."""
    if query_labels is None or gallery_labels is None:
        raise ValueError('query_labels and gallery_labels are required (one identity / class per row).')
    checked = {}
    for name, query_values, gallery_values in (
            ('labels', query_labels, gallery_labels),
            ('cameras', query_cameras, gallery_cameras),
            ('ids', query_ids, gallery_ids)):
        query_codes, gallery_codes = as_id_pair(query_values, gallery_values, name)
        check_length(query_codes, num_query, f'query_{name}', query_rows_name)
        check_length(gallery_codes, num_gallery, f'gallery_{name}', gallery_rows_name)
        checked[name] = query_codes, gallery_codes

    query_groups = gallery_groups = None
    if checked['cameras'][0] is not None:
        # one code per (identity, camera) pair, shared by both sides, so the camera rule is one lookup
        pairs = torch.stack([torch.cat(checked['labels']), torch.cat(checked['cameras'])], dim=1)
        groups = torch.unique(pairs, dim=0, return_inverse=True)[1].reshape(-1)
        query_groups, gallery_groups = groups[:num_query], groups[num_query:]
    return QueryMatches(
        labels=CodeMatches(*checked['labels']),
        groups=None if query_groups is None else CodeMatches(query_groups, gallery_groups),
        ids=None if checked['ids'][0] is None else CodeMatches(*checked['ids']))


def _auto_chunk_size(chunk_size: Optional[int], num_query: int, num_gallery: int) -> int:
    if chunk_size is None:
        chunk_size = max(1, _AUTO_CHUNK_ELEMENTS // num_gallery)
    return min(chunk_size, num_query)


def rank_metrics_from_distances(
        distances: Any,
        *,
        query_labels: Any,
        gallery_labels: Any,
        query_cameras: Any = None,
        gallery_cameras: Any = None,
        query_ids: Any = None,
        gallery_ids: Any = None,
        max_rank: int = 10,
        chunk_size: Optional[int] = None,
) -> Dict[str, Any]:
    """mAP, CMC and mINP from a precomputed `(num_query, num_gallery)` distance matrix (smaller = more similar).

    Same protocol and tie rule as `retrieval_metrics` (see the module docstring); useful for other distances
    (re-ranked, Euclidean, ...). float64 distances are ranked in float64, anything else in float32.

    Args:
        distances: `(Q, G)` tensor or array, no NaN (+inf ranks last).
        query_labels: `(Q,)` identity / class per query (integers or strings).
        gallery_labels: `(G,)` identity / class per gallery item.
        query_cameras: `(Q,)` camera ids, or None; give both camera arguments or neither.
        gallery_cameras: `(G,)` camera ids, or None.
        query_ids: `(Q,)` sample ids, or None; a gallery item with the query's sample id is ignored.
        gallery_ids: `(G,)` sample ids, or None.
        max_rank: Length of the CMC curve.
        chunk_size: Queries per block (bounds memory); None picks a size from the gallery size.

    Returns:
        Dict with `mAP`, `cmc` (list of `max_rank` floats), `mINP`, `num_valid_queries`, `num_skipped_queries`.
    """
    _check_count(max_rank, 'max_rank')
    _check_count(chunk_size, 'chunk_size', allow_none=True)
    distances = as_distances(distances)
    num_query, num_gallery = distances.shape
    matches = _prepare_matches(
        num_query, num_gallery, query_labels, gallery_labels, query_cameras, gallery_cameras, query_ids, gallery_ids,
        query_rows_name='distances (query axis)', gallery_rows_name='distances (gallery axis)')

    step = _auto_chunk_size(chunk_size, num_query, num_gallery)
    ones = torch.ones((step, num_gallery), dtype=torch.int32)
    scores = []
    for start in range(0, num_query, step):
        block = slice(start, start + step)
        scores.append(score_queries(distances[block], matches, block, ones))
    return summarize_query_scores(concat_scores(scores), max_rank)


def retrieval_metrics(
        *,
        query: Any,
        gallery: Any,
        query_labels: Any,
        gallery_labels: Any,
        query_cameras: Any = None,
        gallery_cameras: Any = None,
        query_ids: Any = None,
        gallery_ids: Any = None,
        max_rank: int = 10,
        chunk_size: Optional[int] = None,
) -> Dict[str, Any]:
    """mAP, CMC and mINP of cosine retrieval from query embeddings into gallery embeddings.

    Embeddings are L2-normalised here and ranked in float32 by `1 - cosine similarity`; protocol, camera and
    self-match rules and the tie rule are described in the module docstring. Accepts tensors (moved to the CPU,
    where the ranking runs) or numpy arrays.

    Args:
        query: `(Q, D)` query embeddings.
        gallery: `(G, D)` gallery embeddings, same D.
        query_labels: `(Q,)` identity / class per query (integers or strings).
        gallery_labels: `(G,)` identity / class per gallery item.
        query_cameras: `(Q,)` camera ids, or None; give both camera arguments or neither.
        gallery_cameras: `(G,)` camera ids, or None.
        query_ids: `(Q,)` sample ids, or None; a gallery item with the query's sample id is ignored (for query and
            gallery sets that share samples).
        gallery_ids: `(G,)` sample ids, or None.
        max_rank: Length of the CMC curve (`cmc[k - 1]` is rank-k accuracy).
        chunk_size: Queries per block; temporaries take about `24 * chunk_size * G` bytes. None: ~4M elements.

    Returns:
        Dict with `mAP`, `cmc` (list of `max_rank` floats), `mINP`, `num_valid_queries`, `num_skipped_queries`.

    Raises:
        ValueError: Bad shapes, dimension mismatch, non-finite embeddings, empty sets, mismatched lengths, cameras
            or ids for one side only, or no query with a positive.
    """
    _check_count(max_rank, 'max_rank')
    _check_count(chunk_size, 'chunk_size', allow_none=True)
    query = as_unit_embeddings(query, 'query')
    gallery = as_unit_embeddings(gallery, 'gallery')
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f'query embeddings have dimension {query.shape[1]} but gallery embeddings have {gallery.shape[1]}: '
            f'both sides must come from models with the same embedding size (num_features).')
    num_query, num_gallery = query.shape[0], gallery.shape[0]
    matches = _prepare_matches(
        num_query, num_gallery, query_labels, gallery_labels, query_cameras, gallery_cameras, query_ids, gallery_ids,
        query_rows_name='query', gallery_rows_name='gallery')

    gallery_t = gallery.t()
    step = _auto_chunk_size(chunk_size, num_query, num_gallery)
    ones = torch.ones((step, num_gallery), dtype=torch.int32)
    scores = []
    for start in range(0, num_query, step):
        block = slice(start, start + step)
        distances = torch.rsub(torch.mm(query[block], gallery_t), 1.)  # cosine distance
        scores.append(score_queries(distances, matches, block, ones))
    return summarize_query_scores(concat_scores(scores), max_rank)
