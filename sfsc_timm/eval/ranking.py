""" Exact ranking core behind the retrieval metrics: per-query AP, INP and first-positive rank, vectorised.

For a block of C queries against G gallery items:

1. Matching pairs (same identity; ignored pairs: same identity and camera, or the query's own sample) come from
   binary search in the gallery's sorted codes (`CodeMatches`), as sparse lists, never from `(C, G)` masks: on a
   CPU each dense pass over a block costs about as much as the ranking itself, and matches are few.
2. Each query's positive distances are sorted (a few per row, padded with +inf to the longest row).
3. One batched `searchsorted` places every gallery item among its query's positives: `bucket` = how many positives
   are strictly closer. With `side='left'` a negative tied with a positive lands before it, which is the tie rule.
4. One `scatter_add_` counts items per bucket; taking the positives and ignored items back out leaves the negatives,
   and a cumulative sum gives, for the k-th positive, the negatives ranked before it: `r_k = k + negatives_before`.

That is exact and never sorts whole gallery rows.
"""
from typing import Any, Dict, List, NamedTuple, Optional

import torch

__all__ = ['QueryScores', 'CodeMatches', 'QueryMatches', 'score_queries', 'summarize_query_scores', 'concat_scores']


class QueryScores(NamedTuple):
    """Per-query results; rows with `num_positives == 0` are queries to skip.

    Attributes:
        average_precision: `(Q,)` float64.
        inverse_negative_penalty: `(Q,)` float64, `num_positives / rank of the last positive`.
        first_positive_rank: `(Q,)` int64, 1-based rank of the best positive among the kept gallery items.
        num_positives: `(Q,)` int64, positives left after the camera and self-match rules.
    """
    average_precision: torch.Tensor
    inverse_negative_penalty: torch.Tensor
    first_positive_rank: torch.Tensor
    num_positives: torch.Tensor


class CodeMatches:
    """For every query, the gallery items with an equal code (identity, identity+camera, or sample id).

    The gallery codes are sorted and every query located by binary search once per call; `keys` then lists a block's
    pairs with cheap elementwise ops only.
    """

    def __init__(self, query_codes: torch.Tensor, gallery_codes: torch.Tensor):
        self.num_gallery = gallery_codes.numel()
        self.order = torch.argsort(gallery_codes, stable=True)
        sorted_codes = gallery_codes[self.order].contiguous()
        self.start = torch.searchsorted(sorted_codes, query_codes)
        self.count = torch.searchsorted(sorted_codes, query_codes, right=True) - self.start

    def keys(self, block: slice) -> torch.Tensor:
        """Flat keys `row * G + column` (row relative to the block) of the block's matching pairs, ascending.

        Ascending because rows come in order and, within a row, all matches share one code, which the stable sort
        left in gallery order.
        """
        start, count = self.start[block], self.count[block]
        rows = torch.repeat_interleave(torch.arange(count.numel()), count)
        offset_in_row = torch.arange(rows.numel()) - (count.cumsum(0) - count)[rows]
        return rows * self.num_gallery + self.order[start[rows] + offset_in_row]


class QueryMatches(NamedTuple):
    """The matches that define positives (`labels`) and ignored items (`groups`: identity+camera, `ids`: sample)."""
    labels: CodeMatches
    groups: Optional[CodeMatches]
    ids: Optional[CodeMatches]


def score_queries(
        distances: torch.Tensor,
        matches: QueryMatches,
        block: slice,
        ones: torch.Tensor,
) -> QueryScores:
    """Per-query AP, INP and first-positive rank for one block of queries.

    Args:
        distances: `(C, G)` distances of the block's queries (no NaN), float32 or float64.
        matches: Pairs for all queries; `block` selects this block's.
        block: The block's query rows, `slice(start, start + C)`.
        ones: Reusable int32 ones, at least `(C, G)` (scatter source, kept to avoid refilling it per block).
    """
    num_query, num_gallery = distances.shape
    positive_keys = matches.labels.keys(block)
    ignored_parts = [m.keys(block) for m in (matches.groups, matches.ids) if m is not None]
    ignored_keys = torch.unique(torch.cat(ignored_parts)) if ignored_parts else None
    if ignored_keys is not None:
        positive_keys = positive_keys[~torch.isin(positive_keys, ignored_keys)]
    rows, cols = positive_keys // num_gallery, positive_keys % num_gallery  # each row's positives are contiguous

    num_positives = torch.bincount(rows, minlength=num_query)
    max_positives = int(num_positives.max())
    if max_positives == 0:
        zeros = torch.zeros(num_query, dtype=torch.float64)
        return QueryScores(zeros, zeros.clone(), torch.zeros(num_query, dtype=torch.int64), num_positives)

    # each query's positive distances, ascending, padded on the right with +inf: (C, P), P = most positives per row
    slot = torch.arange(rows.numel()) - (num_positives.cumsum(0) - num_positives)[rows]
    positive_distances = distances.new_full((num_query, max_positives), float('inf'))
    positive_distances[rows, slot] = distances[rows, cols]
    positive_distances = positive_distances.sort(dim=1).values

    # positives strictly closer than each item; +inf padding is never strictly closer than anything
    bucket = torch.searchsorted(positive_distances, distances)
    negatives_per_bucket = torch.zeros((num_query, max_positives + 1), dtype=torch.int32)
    negatives_per_bucket.scatter_add_(1, bucket, ones[:num_query, :num_gallery])
    minus_one = torch.tensor(-1, dtype=torch.int32)
    negatives_per_bucket.index_put_((rows, bucket[rows, cols]), minus_one, accumulate=True)
    if ignored_keys is not None:
        ignored_rows, ignored_cols = ignored_keys // num_gallery, ignored_keys % num_gallery
        negatives_per_bucket.index_put_((ignored_rows, bucket[ignored_rows, ignored_cols]), minus_one, accumulate=True)
    negatives_before = negatives_per_bucket[:, :max_positives].cumsum(1).to(torch.float64)

    positive_number = torch.arange(1, max_positives + 1, dtype=torch.float64)  # k for the k-th closest positive
    rank = positive_number + negatives_before  # r_k, 1-based, among the kept gallery items
    is_real = positive_number[None, :] <= num_positives[:, None]
    has_positive = num_positives > 0
    safe_count = num_positives.clamp(min=1)

    average_precision = torch.where(is_real, positive_number / rank, 0.).sum(1) / safe_count
    last_rank = rank.gather(1, (safe_count - 1)[:, None]).squeeze(1)
    inverse_negative_penalty = torch.where(has_positive, num_positives / last_rank, 0.)
    first_positive_rank = torch.where(has_positive, rank[:, 0].to(torch.int64), 0)
    return QueryScores(average_precision, inverse_negative_penalty, first_positive_rank, num_positives)


def concat_scores(scores: List[QueryScores]) -> QueryScores:
    """Join the scores of consecutive blocks."""
    return QueryScores(*(torch.cat(parts) for parts in zip(*scores)))


def summarize_query_scores(scores: QueryScores, max_rank: int = 10) -> Dict[str, Any]:
    """Average per-query scores over the valid queries (those with at least one positive).

    Returns:
        Dict with `mAP`, `cmc` (rank-1 .. rank-`max_rank` accuracy), `mINP` (floats in [0, 1]),
        `num_valid_queries` and `num_skipped_queries`.

    Raises:
        ValueError: No query has a positive.
    """
    valid = scores.num_positives > 0
    num_valid = int(valid.sum())
    num_query = int(valid.numel())
    if num_valid == 0:
        raise ValueError(
            f'None of the {num_query} queries has a positive in the gallery, so mAP/CMC are undefined. Check that '
            f'query and gallery share identities (labels) and that the camera rule (same identity and same camera '
            f'is ignored) or the self-match rule (same sample id is ignored) leaves at least one match.')
    first_rank = scores.first_positive_rank[valid]
    # histogram of first-positive ranks 1..max_rank (everything later lands in one overflow bin), then cumulate
    hits = torch.bincount(first_rank.clamp(max=max_rank + 1), minlength=max_rank + 2)[1:max_rank + 1].cumsum(0)
    return {
        'mAP': float(scores.average_precision[valid].mean()),
        'cmc': (hits.to(torch.float64) / num_valid).tolist(),
        'mINP': float(scores.inverse_negative_penalty[valid].mean()),
        'num_valid_queries': num_valid,
        'num_skipped_queries': num_query - num_valid,
    }
