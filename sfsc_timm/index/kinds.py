"""The faiss index kinds a gallery can use, their parameters and defaults (docs/gallery_index.md).

Every kind ranks by inner product, which on unit embeddings is the cosine similarity evaluation uses:

- ``flat``: exact search over every item (``IndexFlatIP``), the default: no training, no parameter, the ranking
  evaluation measures; enough for galleries up to a few hundred thousand items.
- ``ivf-flat``: an inverted file of ``nlist`` k-means lists; a search scans the ``nprobe`` lists nearest to the query
  (``IndexIVFFlat``). Full vectors, so memory as ``flat``.
- ``ivf-pq``: the same lists holding product-quantised residuals, ``pq_m`` codes of ``pq_nbits`` bits per vector
  (``IndexIVFPQ``): about ``pq_m * pq_nbits / 8`` bytes per item instead of ``4 D``, and approximate scores.
- ``hnsw``: a navigable small-world graph of ``hnsw_m`` links per node (``IndexHNSWFlat``), searched with a beam of
  ``ef_search``; no training, fast, more memory (the links), no removal in place (a removal rebuilds the graph).

IVF kinds are trained once, at build, on a uniform random sample (``train_size`` vectors drawn with ``seed``);
items added later go to the lists trained then.
"""
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional

import numpy as np

from ..errors import UsageError

__all__ = ['KINDS', 'IndexSpec', 'create_index', 'train_index', 'search_parameters', 'apply_search_defaults',
           'default_nlist']

KINDS = ('flat', 'ivf-flat', 'ivf-pq', 'hnsw')
# which parameters mean something for which kind; any other is refused, never ignored
_PARAMETERS = {
    'flat': (),
    'ivf-flat': ('nlist', 'nprobe', 'train_size', 'seed'),
    'ivf-pq': ('nlist', 'nprobe', 'pq_m', 'pq_nbits', 'train_size', 'seed'),
    'hnsw': ('hnsw_m', 'ef_construction', 'ef_search'),
}
FLAGS = dict(nlist='--nlist', nprobe='--nprobe', pq_m='--pq-m', pq_nbits='--pq-nbits', hnsw_m='--hnsw-m',
             ef_construction='--ef-construction', ef_search='--ef-search', train_size='--train-size', seed='--seed')
# faiss warns below 39 training points per centroid (and samples down to 256); 64 per centroid trains well and keeps
# the k-means of a million-item gallery (4096 lists) to a couple of minutes on two cores
_MIN_POINTS_PER_CENTROID = 39
_DEFAULT_POINTS_PER_CENTROID = 64
DEFAULT_NPROBE_FRACTION = 1 / 32  # of the lists; benchmarks/perf/index_scale.py measured recall@10 against it
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128


@dataclass(frozen=True)
class IndexSpec:
    """An index kind and its parameters; None means "the default for this gallery" (:meth:`resolve`).

    Attributes:
        kind: one of ``KINDS``.
        nlist: IVF lists (default: a power of two near 4 sqrt(N), at most N / 39).
        nprobe: IVF lists scanned per query (default: nlist / 32, at least 1).
        pq_m: PQ codes per vector, a divisor of D (default: the largest divisor of D up to D / 4).
        pq_nbits: bits per PQ code (default: 8).
        hnsw_m: HNSW links per node (default: 32).
        ef_construction: HNSW beam while building (default: 80).
        ef_search: HNSW beam while searching (default: 128).
        train_size: vectors the IVF k-means (and PQ) are trained on (default: all, up to 64 per centroid).
        seed: seed of the training sample (default: 0).
    """
    kind: str = 'flat'
    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    pq_m: Optional[int] = None
    pq_nbits: Optional[int] = None
    hnsw_m: Optional[int] = None
    ef_construction: Optional[int] = None
    ef_search: Optional[int] = None
    train_size: Optional[int] = None
    seed: Optional[int] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UsageError(f'--kind {self.kind!r} is not one of {", ".join(KINDS)}.')
        meaningful = _PARAMETERS[self.kind]
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == 'kind' or value is None:
                continue
            if field.name not in meaningful:
                owners = [k for k, names in _PARAMETERS.items() if field.name in names]
                raise UsageError(f'{FLAGS[field.name]} is a parameter of {" and ".join(owners)}, not of {self.kind}; '
                                 f'drop it or choose --kind {owners[0]}.')
            lowest = 0 if field.name == 'seed' else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
                raise UsageError(f'{FLAGS[field.name]} must be an integer >= {lowest}, got {value!r}.')

    def parameters(self) -> Dict[str, Any]:
        """The parameters that mean something for this kind (what index.json records)."""
        return {name: value for name, value in asdict(self).items() if name in _PARAMETERS[self.kind]}

    def resolve(self, count: int, dim: int) -> 'IndexSpec':
        """Every default filled in for a gallery of ``count`` vectors of dimension ``dim``, and checked.

        Raises:
            UsageError: parameters that cannot work for this gallery (more lists than training vectors, a PQ size
                that does not divide D, ...), naming the flag.
        """
        if self.kind == 'flat':
            return self
        if self.kind == 'hnsw':
            return replace(self, hnsw_m=self.hnsw_m or DEFAULT_HNSW_M,
                           ef_construction=self.ef_construction or DEFAULT_EF_CONSTRUCTION,
                           ef_search=self.ef_search or DEFAULT_EF_SEARCH)
        nlist = self.nlist or default_nlist(count)
        spec = replace(self, nlist=nlist, nprobe=self.nprobe or max(1, round(nlist * DEFAULT_NPROBE_FRACTION)),
                       seed=0 if self.seed is None else self.seed)
        if spec.nprobe > nlist:
            raise UsageError(f'--nprobe {spec.nprobe} is more than the {nlist} lists (--nlist); choose at most '
                             f'{nlist}.')
        centroids = nlist
        if self.kind == 'ivf-pq':
            pq_m = self.pq_m or max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)
            if dim % pq_m:
                raise UsageError(f'--pq-m {pq_m} does not divide the embedding size D={dim}; choose a divisor, '
                                 f'e.g. {dim // 4 if dim % 4 == 0 else 1}.')
            pq_nbits = self.pq_nbits or 8
            if pq_nbits > 16:
                raise UsageError(f'--pq-nbits {pq_nbits}: faiss codes have at most 16 bits; 8 is the usual choice.')
            spec = replace(spec, pq_m=pq_m, pq_nbits=pq_nbits)
            centroids = max(nlist, 2 ** pq_nbits)
        train_size = min(count, self.train_size or _DEFAULT_POINTS_PER_CENTROID * centroids)
        if train_size < centroids:
            what = f'{nlist} lists (--nlist)' if centroids == nlist else f'2^{spec.pq_nbits} PQ centroids (--pq-nbits)'
            raise UsageError(f'{what} need at least {centroids} training vectors, but there are {train_size} '
                             f'({"--train-size" if self.train_size else "the gallery"}): lower them, or build a '
                             '--kind flat index, exact and as fast at this size.')
        return replace(spec, train_size=train_size)


def default_nlist(count: int) -> int:
    """A power of two near 4 sqrt(N) (faiss's guideline is 4 to 16 sqrt(N)), with at least 39 vectors per list."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))
    return int(max(1, min(target, count // _MIN_POINTS_PER_CENTROID)))


def create_index(spec: IndexSpec, dim: int, faiss) -> Any:
    """An empty faiss index of a resolved spec, for inner product, that takes our stable item ids."""
    if spec.kind == 'flat':
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if spec.kind == 'hnsw':
        graph = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = spec.ef_construction
        graph.hnsw.efSearch = spec.ef_search
        return faiss.IndexIDMap2(graph)
    quantizer = faiss.IndexFlatIP(dim)
    if spec.kind == 'ivf-flat':
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.pq_m, spec.pq_nbits, faiss.METRIC_INNER_PRODUCT)
    # an id -> (list, offset) table, so that items can be read back (re-ranking) and removed by id
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.nprobe = spec.nprobe
    return index


def train_index(index: Any, spec: IndexSpec, vectors: np.ndarray) -> Dict[str, Any]:
    """Train an IVF index on a uniform random sample of ``vectors``; what index.json records about it."""
    if index.is_trained:
        return {}
    rng = np.random.default_rng(spec.seed)
    sample = vectors if spec.train_size >= len(vectors) else \
        vectors[np.sort(rng.choice(len(vectors), spec.train_size, replace=False))]
    index.train(np.ascontiguousarray(sample))
    return dict(vectors=int(len(sample)), seed=spec.seed, sampled_from=int(len(vectors)))


def apply_search_defaults(index: Any, spec: IndexSpec, faiss) -> None:
    """Set the recorded search parameters on an index read from disk."""
    if spec.kind in ('ivf-flat', 'ivf-pq'):
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    elif spec.kind == 'hnsw':
        faiss.downcast_index(index.index).hnsw.efSearch = spec.ef_search


def search_parameters(spec: IndexSpec, faiss, nprobe: Optional[int] = None, ef_search: Optional[int] = None):
    """faiss search parameters overriding the recorded ones for one search (None: the index's own)."""
    if nprobe is not None and spec.kind not in ('ivf-flat', 'ivf-pq'):
        raise UsageError(f'--nprobe is a search parameter of ivf-flat and ivf-pq indexes; this one is {spec.kind}.')
    if ef_search is not None and spec.kind != 'hnsw':
        raise UsageError(f'--ef-search is a search parameter of hnsw indexes; this one is {spec.kind}.')
    for flag, value in (('--nprobe', nprobe), ('--ef-search', ef_search)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise UsageError(f'{flag} must be an integer >= 1, got {value!r}.')
    if nprobe is not None:
        if nprobe > spec.nlist:
            raise UsageError(f'--nprobe {nprobe} is more than the index\'s {spec.nlist} lists; choose at most '
                             f'{spec.nlist}.')
        return faiss.SearchParametersIVF(nprobe=int(nprobe))
    if ef_search is not None:
        return faiss.SearchParametersHNSW(efSearch=int(ef_search))
    return None
