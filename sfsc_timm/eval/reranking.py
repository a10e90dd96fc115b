""" Re-ranking a retrieval: k-reciprocal encoding (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017) and average query expansion, with fast-reid's parameter names and defaults
(``TEST.RERANK.K1 / K2 / LAMBDA`` = 20 / 6 / 0.3, ``TEST.AQE.QE_K / ALPHA`` = 5 / 3.0).

k-reciprocal re-ranking of Q queries against G gallery items, over the N = Q + G items together, from one distance
``d`` (a given matrix, or the cosine distance ``1 - <x, y>`` of unit embeddings). ``N(i, k)`` is the k + 1 items
nearest to ``i`` (``i`` itself included, ties by index), as in the reference code:

- ``R(i, k) = {j in N(i, k) : i in N(j, k)}``, the k-reciprocal neighbours;
- ``R*(i) = R(i, k1)`` united with every ``R(c, h)``, ``c in R(i, k1)``, ``h = round(k1 / 2)`` (half to even), for
  which ``|R(c, h) & R(i, k1)| >= 2/3 |R(c, h)|``;
- ``V_i[j] = exp(-d(i, j)) / sum_{l in R*(i)} exp(-d(i, l))`` for ``j`` in ``R*(i)``, else 0 (each row normalised
  to sum 1, as both reference codes do);
- local query expansion: ``V_i <- mean of V_j over the k2 items j nearest to i`` (``i`` included);
- ``d_J(p, g) = 1 - sum_j min(V_p[j], V_g[j]) / sum_j max(V_p[j], V_g[j])``;
- ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g)``.

V is kept sparse (about ``N * |R*| * k2`` entries), so memory grows with N, not N², beyond the (Q, G) result.

Average query expansion (Chum et al. 2007; alpha-weighted, Radenovic et al. 2018, as fast-reid's ``aqe``): each
query becomes ``normalise(q + sum_j max(<q, g_j>, 0)^alpha g_j)`` over its k nearest gallery items. Only the
queries are expanded: a gallery behind an index is not re-embedded at query time (fast-reid also expands the
gallery, database-side augmentation).
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

from .inputs import as_distances, as_unit_embeddings

__all__ = ['RerankOptions', 'QueryExpansion', 'k_reciprocal_distances', 'rerank_each_query', 're_ranking',
           'average_query_expansion', 'expand_queries']

# rows of distances materialised at once while building the neighbour graph (memory: rows x N)
_ROW_BLOCK = 1024
# queries whose Jaccard distances are accumulated at once (memory: block x G, plus the matched entries)
_QUERY_BLOCK = 64

RowDistances = Callable[[slice], torch.Tensor]


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}.')


@dataclass(frozen=True)
class RerankOptions:
    """k-reciprocal re-ranking parameters, fast-reid's ``TEST.RERANK`` (``K1``, ``K2``, ``LAMBDA``)."""
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self):
        _check_positive_int(self.k1, 'k1')
        _check_positive_int(self.k2, 'k2')
        if isinstance(self.lambda_value, bool) or not 0.0 <= float(self.lambda_value) <= 1.0:
            raise ValueError(f'lambda_value must be in [0, 1] (the weight of the original distance), got '
                             f'{self.lambda_value!r}.')

    def to_dict(self) -> dict:
        return dict(k1=self.k1, k2=self.k2, lambda_value=float(self.lambda_value))


@dataclass(frozen=True)
class QueryExpansion:
    """Average query expansion parameters, fast-reid's ``TEST.AQE`` (``QE_K``, ``ALPHA``)."""
    k: int = 5
    alpha: float = 3.0

    def __post_init__(self):
        _check_positive_int(self.k, 'k')
        if isinstance(self.alpha, bool) or not float(self.alpha) >= 0.0:
            raise ValueError(f'alpha must be >= 0 (0: plain average), got {self.alpha!r}.')

    def to_dict(self) -> dict:
        return dict(k=self.k, alpha=float(self.alpha))


def _nearest(rows: RowDistances, num_items: int, k: int) -> torch.Tensor:
    """(N, k) indices of each item's k nearest items (itself included), nearest first, equal distances by index."""
    parts = []
    for start in range(0, num_items, _ROW_BLOCK):
        block = rows(slice(start, min(start + _ROW_BLOCK, num_items)))
        values, indices = torch.topk(block, k, dim=1, largest=False, sorted=True)
        indices, by_index = indices.sort(dim=1)  # then a stable sort by distance keeps ties in index order
        order = values.gather(1, by_index).sort(dim=1, stable=True).indices
        parts.append(indices.gather(1, order))
    return torch.cat(parts)


def _reciprocal(nearest: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k + 1) mask: which of ``N(i, k) = nearest[i, :k + 1]`` have ``i`` in their own ``N(j, k)``."""
    forward = nearest[:, :k + 1]
    mask = torch.empty(forward.shape, dtype=torch.bool)
    for start in range(0, forward.shape[0], _ROW_BLOCK):
        block = slice(start, start + _ROW_BLOCK)
        own = torch.arange(start, start + forward[block].shape[0])[:, None, None]
        mask[block] = (forward[forward[block]] == own).any(-1)
    return mask


def _expanded_sets(nearest: torch.Tensor, k1: int, reciprocal: torch.Tensor, reciprocal_half: torch.Tensor,
                   rows: slice) -> Tuple[torch.Tensor, torch.Tensor]:
    """``R*(i)`` for the items ``rows``: (b, S) member indices, ascending, and a (b, S) mask of the real ones.

    ``reciprocal`` / ``reciprocal_half``: the :func:`_reciprocal` masks of every item for k1 and round(k1 / 2).
    """
    half = int(round(k1 / 2))
    forward, forward_mask = nearest[rows, :k1 + 1], reciprocal[rows]
    halves, halves_mask = nearest[:, :half + 1][forward], reciprocal_half[forward]  # (b, A, H)
    in_set = ((halves[..., None] == forward[:, None, None, :]) & forward_mask[:, None, None, :]).any(-1)
    overlap = (in_set & halves_mask).sum(-1)
    size = halves_mask.sum(-1)
    accepted = forward_mask & (3 * overlap >= 2 * size)  # |R(c, h) & R(i, k1)| >= 2/3 |R(c, h)|, in integers
    members = torch.cat([forward, halves.flatten(1)], dim=1)
    valid = torch.cat([forward_mask, (halves_mask & accepted[..., None]).flatten(1)], dim=1)
    sentinel = nearest.shape[0]  # sorts after every real index
    members = torch.where(valid, members, sentinel).sort(dim=1).values
    first = torch.ones_like(valid)
    first[:, 1:] = members[:, 1:] != members[:, :-1]
    return members, first & (members < sentinel)


def _encode(rows: RowDistances, nearest: torch.Tensor, k1: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse k-reciprocal encoding V: (row, column, value) entries, row-major."""
    num_items = nearest.shape[0]
    reciprocal, reciprocal_half = _reciprocal(nearest, k1), _reciprocal(nearest, int(round(k1 / 2)))
    entry_rows, entry_cols, entry_vals = [], [], []
    for start in range(0, num_items, _ROW_BLOCK):
        block = slice(start, min(start + _ROW_BLOCK, num_items))
        members, valid = _expanded_sets(nearest, k1, reciprocal, reciprocal_half, block)
        distances = rows(block).gather(1, members.clamp(max=num_items - 1))
        distances = torch.where(valid, distances, torch.inf)
        # exp(-d) normalised per row, shifted by the row's smallest distance so that nothing underflows
        weights = torch.exp(-(distances - distances.min(dim=1, keepdim=True).values))
        weights = weights / weights.sum(dim=1, keepdim=True)
        row_index = torch.arange(block.start, block.stop)[:, None].expand_as(members)
        entry_rows.append(row_index[valid])
        entry_cols.append(members[valid])
        entry_vals.append(weights[valid])
    return torch.cat(entry_rows), torch.cat(entry_cols), torch.cat(entry_vals)


def _row_pointers(entry_rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(entry_rows, minlength=num_rows).cumsum(0)])


def _gather_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated ``arange(start, start + length)`` for every (start, length) pair."""
    total = int(lengths.sum())
    offsets = torch.arange(total) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    return torch.repeat_interleave(starts, lengths) + offsets


def _local_expansion(entries, nearest: torch.Tensor, k2: int):
    """V_i <- the mean of V_j over the k2 items nearest to i, still sparse and row-major."""
    entry_rows, entry_cols, entry_vals = entries
    num_items = nearest.shape[0]
    k2 = min(k2, nearest.shape[1])
    if k2 == 1:  # the mean over the item itself
        return entries
    pointers = _row_pointers(entry_rows, num_items)
    sources = nearest[:, :k2].reshape(-1)
    lengths = pointers[sources + 1] - pointers[sources]
    positions = _gather_ranges(pointers[sources], lengths)
    owners = torch.repeat_interleave(torch.arange(num_items).repeat_interleave(k2), lengths)
    keys, inverse = torch.unique(owners * num_items + entry_cols[positions], return_inverse=True)
    values = torch.zeros(keys.numel(), dtype=entry_vals.dtype).index_add_(0, inverse, entry_vals[positions] / k2)
    return keys // num_items, keys % num_items, values


class _Jaccard:
    """d_J of query rows against every gallery row of a sparse, row-major V (queries are the first rows)."""

    def __init__(self, entries, num_query: int, num_items: int):
        self.rows, self.cols, self.vals = entries
        self.num_query, self.num_gallery = num_query, num_items - num_query
        self.row_sums = torch.zeros(num_items, dtype=self.vals.dtype).index_add_(0, self.rows, self.vals)
        self.pointers = _row_pointers(self.rows, num_items)
        # the gallery rows' entries by column, so that each query entry meets the gallery entries of its column
        in_gallery = self.rows >= num_query
        by_column = torch.argsort(self.cols[in_gallery], stable=True)
        self.gallery_rows = self.rows[in_gallery][by_column] - num_query
        self.gallery_vals = self.vals[in_gallery][by_column]
        self.column_pointers = _row_pointers(self.cols[in_gallery], num_items)

    def __call__(self, queries: slice) -> torch.Tensor:
        """(b, G) Jaccard distances of the queries ``queries``."""
        mine = slice(int(self.pointers[queries.start]), int(self.pointers[queries.stop]))
        rows, cols, vals = self.rows[mine] - queries.start, self.cols[mine], self.vals[mine]
        lengths = self.column_pointers[cols + 1] - self.column_pointers[cols]
        matched = _gather_ranges(self.column_pointers[cols], lengths)
        minimum = torch.minimum(torch.repeat_interleave(vals, lengths), self.gallery_vals[matched])
        size = queries.stop - queries.start
        shared = torch.zeros(size * self.num_gallery, dtype=self.vals.dtype)
        shared.index_add_(0, torch.repeat_interleave(rows, lengths) * self.num_gallery + self.gallery_rows[matched],
                          minimum)
        shared = shared.reshape(size, self.num_gallery)
        # sum_j max(a_j, b_j) = sum a + sum b - sum_j min(a_j, b_j)
        union = self.row_sums[queries, None] + self.row_sums[None, self.num_query:] - shared
        return 1 - shared / union.clamp_min(torch.finfo(union.dtype).tiny)


def _rerank(rows: RowDistances, num_query: int, num_items: int, options: RerankOptions) -> torch.Tensor:
    """d* of the first ``num_query`` items against the others, from ``rows(block) -> (b, N)`` distances."""
    nearest = _nearest(rows, num_items, min(num_items, max(options.k1 + 1, options.k2)))
    entries = _local_expansion(_encode(rows, nearest, options.k1), nearest, options.k2)
    jaccard = _Jaccard(entries, num_query, num_items)
    lam = float(options.lambda_value)
    out = []
    for start in range(0, num_query, _QUERY_BLOCK):
        block = slice(start, min(start + _QUERY_BLOCK, num_query))
        out.append((1 - lam) * jaccard(block) + lam * rows(block)[:, num_query:])
    return torch.cat(out)


def _options(options: Optional[RerankOptions], k1, k2, lambda_value) -> RerankOptions:
    if options is not None:
        return options
    return RerankOptions(k1=k1, k2=k2, lambda_value=lambda_value)


def k_reciprocal_distances(query: Any, gallery: Any, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                           options: Optional[RerankOptions] = None) -> torch.Tensor:
    """Re-ranked (Q, G) distances of query embeddings against gallery embeddings (cosine distance ``d``).

    Equal to :func:`re_ranking` on the cosine distance matrices; the neighbour graph is built in blocks, so memory
    stays about linear in Q + G beyond the (Q, G) result.

    Args:
        query: (Q, D) embeddings (L2-normalised here).
        gallery: (G, D) embeddings, same D.
        k1, k2, lambda_value: fast-reid's ``TEST.RERANK.K1 / K2 / LAMBDA``; or ``options``.

    Returns:
        (Q, G) float32 distances, smaller = more similar, for ``rank_metrics_from_distances``.
    """
    options = _options(options, k1, k2, lambda_value)
    query, gallery = as_unit_embeddings(query, 'query'), as_unit_embeddings(gallery, 'gallery')
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f'query embeddings have dimension {query.shape[1]} but gallery embeddings have '
                         f'{gallery.shape[1]}.')
    items = torch.cat([query, gallery])
    items_t = items.t().contiguous()

    def rows(block: slice) -> torch.Tensor:
        return torch.rsub(items[block] @ items_t, 1.0)
    return _rerank(rows, query.shape[0], items.shape[0], options)


def rerank_each_query(query: Any, candidates: Any, *, options: Optional[RerankOptions] = None) -> torch.Tensor:
    """Each query re-ranked among its own candidates only (an index's top hits): ``out[b]`` equals
    ``k_reciprocal_distances(query[b:b + 1], candidates[b])``.

    The B problems of 1 + c items are solved as one, with infinite distances between problems: with at least
    ``max(k1 + 1, k2)`` items per problem no neighbourhood reaches into another, and one pass over B problems costs far
    less than B small ones. Fewer candidates than that fall back to one problem at a time.

    Args:
        query: (B, D) embeddings; candidates: (B, c, D), each query's candidates (L2-normalised here).
        options: the re-ranking parameters (default: fast-reid's).

    Returns:
        (B, c) float32 re-ranked distances.
    """
    options = options or RerankOptions()
    query = as_unit_embeddings(query, 'query')
    candidates = torch.as_tensor(candidates, dtype=torch.float32)
    if candidates.dim() != 3 or candidates.shape[0] != query.shape[0] or candidates.shape[2] != query.shape[1]:
        raise ValueError(f'candidates must be (B, c, D) = ({query.shape[0]}, c, {query.shape[1]}), got '
                         f'{tuple(candidates.shape)}.')
    num_problems, count = candidates.shape[:2]
    if count + 1 < max(options.k1 + 1, options.k2):
        return torch.stack([k_reciprocal_distances(query[b:b + 1], candidates[b], options=options)[0]
                            for b in range(num_problems)]) if num_problems else torch.zeros(0, count)
    gallery = as_unit_embeddings(candidates.reshape(-1, candidates.shape[2]), 'candidates')
    items = torch.cat([query, gallery])
    items_t = items.t().contiguous()
    problem = torch.cat([torch.arange(num_problems), torch.arange(num_problems).repeat_interleave(count)])

    def rows(block: slice) -> torch.Tensor:
        distances = torch.rsub(items[block] @ items_t, 1.0)
        return distances.masked_fill_(problem[block, None] != problem[None, :], torch.inf)
    distances = _rerank(rows, num_problems, items.shape[0], options)  # (B, B * c): the diagonal blocks are ours
    return distances.reshape(num_problems, num_problems, count)[torch.arange(num_problems), torch.arange(num_problems)]


def re_ranking(q_g_dist: Any, q_q_dist: Any, g_g_dist: Any, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
               options: Optional[RerankOptions] = None) -> torch.Tensor:
    """Re-ranked (Q, G) distances from the three distance matrices of the reference code's interface.

    Args:
        q_g_dist: (Q, G) query-gallery distances; q_q_dist: (Q, Q); g_g_dist: (G, G). Smaller = more similar, no NaN;
            float64 stays float64.
        k1, k2, lambda_value: fast-reid's ``TEST.RERANK.K1 / K2 / LAMBDA``; or ``options``.
    """
    options = _options(options, k1, k2, lambda_value)
    q_g, q_q, g_g = as_distances(q_g_dist), as_distances(q_q_dist), as_distances(g_g_dist)
    num_query, num_gallery = q_g.shape
    if q_q.shape != (num_query, num_query) or g_g.shape != (num_gallery, num_gallery):
        raise ValueError(f'q_g_dist is {tuple(q_g.shape)}, so q_q_dist must be {(num_query, num_query)} and g_g_dist '
                         f'{(num_gallery, num_gallery)}; got {tuple(q_q.shape)} and {tuple(g_g.shape)}.')
    dtype = torch.float64 if torch.float64 in (q_g.dtype, q_q.dtype, g_g.dtype) else torch.float32
    full = torch.cat([torch.cat([q_q, q_g], 1), torch.cat([q_g.t(), g_g], 1)]).to(dtype)
    return _rerank(lambda block: full[block], num_query, full.shape[0], options)


def expand_queries(query: torch.Tensor, neighbours: torch.Tensor, similarities: torch.Tensor,
                   alpha: float) -> torch.Tensor:
    """``normalise(q + sum_j max(s_j, 0)^alpha g_j)``: queries (Q, D), their neighbours (Q, k, D) and similarities
    (Q, k); the query itself counts with weight 1 (its similarity to itself)."""
    weights = similarities.clamp_min(0).pow(float(alpha))
    expanded = query + (weights[..., None] * neighbours).sum(1)
    return torch.nn.functional.normalize(expanded, dim=1)


def average_query_expansion(query: Any, gallery: Any, *, k: int = 5, alpha: float = 3.0,
                            options: Optional[QueryExpansion] = None) -> torch.Tensor:
    """Expanded (Q, D) unit query embeddings: each query averaged with its k nearest gallery items (module docstring).

    Args:
        query: (Q, D) embeddings; gallery: (G, D) embeddings (both L2-normalised here).
        k, alpha: fast-reid's ``TEST.AQE.QE_K / ALPHA``; or ``options``.
    """
    options = options or QueryExpansion(k=k, alpha=alpha)
    query, gallery = as_unit_embeddings(query, 'query'), as_unit_embeddings(gallery, 'gallery')
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f'query embeddings have dimension {query.shape[1]} but gallery embeddings have '
                         f'{gallery.shape[1]}.')
    k = min(options.k, gallery.shape[0])
    gallery_t = gallery.t().contiguous()
    out = []
    for start in range(0, query.shape[0], _ROW_BLOCK):
        block = query[start:start + _ROW_BLOCK]
        similarities, indices = torch.topk(block @ gallery_t, k, dim=1)
        out.append(expand_queries(block, gallery[indices], similarities, options.alpha))
    return torch.cat(out)
