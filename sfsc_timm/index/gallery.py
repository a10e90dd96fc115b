"""A gallery index: built once from ``sfsc-timm embed``'s output at one width, searched with queries embedded at any
width of the same checkpoint, items added and removed in place under stable ids (docs/gallery_index.md)."""
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .. import __version__
from ..errors import UsageError
from ..eval.reranking import (
    QueryExpansion, RerankOptions, expand_queries, k_reciprocal_distances, rerank_each_query,
)
from ._faiss import import_faiss
from .embeddings import EmbeddingFile, check_unique_ids, embeddings_from_array, read_embedding_file
from .folder import (
    FORMAT, FORMAT_VERSION, ITEM_ID, META_FILE, check_index_destination, exclusive, read_index_folder, read_meta,
    write_index_folder,
)
from .identity import CHECKPOINT_ID_KEY, check_same_checkpoint
from .kinds import IndexSpec, apply_search_defaults, create_index, search_parameters, train_index
from .results import SearchResult

__all__ = ['GalleryIndex', 'build_index', 'summary_lines', 'DEFAULT_RERANK_CANDIDATES']

Embeddings = Union[str, Path, EmbeddingFile, np.ndarray, torch.Tensor]
DEFAULT_RERANK_CANDIDATES = 100  # hits re-ranked per query: 5 x fast-reid's k1 = 20
_SEARCH_BATCH = 4096  # queries per faiss call when expanding (bounds the reconstructed vectors)
_RERANK_SEARCH_BATCH = 1024  # ... when re-ranking: 1024 x 100 candidates x D float32 (52 MB at D = 128)
# queries re-ranked together (rerank_each_query): B (c + 1) items, whose temporaries grow with B squared
_RERANK_BATCH = 8


@contextmanager
def _one_thread():
    """torch on one thread: re-ranking problems of a few hundred items gain nothing from intra-op threads, and on
    busy cores lose several times their time waiting for them (measured: 170 against 20-60 queries/s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _embeddings(value: Embeddings) -> EmbeddingFile:
    if isinstance(value, EmbeddingFile):
        return value
    if isinstance(value, (str, Path)):
        return read_embedding_file(value)
    return embeddings_from_array(value)


def _describe_width(widths: Iterable[float]) -> str:
    widths = list(widths)
    return f'width {"/".join(f"{w:g}" for w in widths)}' if widths else 'width unknown'


def build_index(embeddings: Embeddings, output: Union[str, Path], spec: Optional[IndexSpec] = None, *,
                force: bool = False) -> 'GalleryIndex':
    """Build the index folder ``output`` from embeddings (an embed Parquet file, at any width).

    Args:
        embeddings: the gallery: a Parquet file written by ``sfsc-timm embed``, an :class:`EmbeddingFile`, or an
            (N, D) array (no model metadata: searching it then needs ``allow_other_checkpoint``).
        output: the index folder to write, whole or not at all.
        spec: the index kind and its parameters (default: exact inner product, ``IndexSpec('flat')``).
        force: replace ``output`` even if it holds files that are not an index's.

    Raises:
        DestinationInUse: ``output`` holds the user's files (without ``force``).
        UsageError: embeddings or parameters that cannot be indexed, naming the fix.
    """
    faiss = import_faiss()
    output = Path(output)
    check_index_destination(output, force)
    gallery = _embeddings(embeddings)
    if gallery.id_column == ITEM_ID:
        raise UsageError(f'{gallery.name}: the id column is named {ITEM_ID!r}, which the index uses for its own ids; '
                         'embed the gallery with another --id-column.')
    check_unique_ids(gallery.ids, gallery.name)
    spec = (spec or IndexSpec()).resolve(len(gallery), gallery.embed_dim)
    index = create_index(spec, gallery.embed_dim, faiss)
    training = train_index(index, spec, gallery.vectors)
    item_ids = np.arange(len(gallery), dtype=np.int64)
    index.add_with_ids(gallery.vectors, item_ids)
    items = pa.table({ITEM_ID: item_ids, gallery.id_column: gallery.ids})
    source = gallery.metadata
    meta = dict(
        format=FORMAT, format_version=FORMAT_VERSION, generation=1,
        model=source.get('model'), architecture=source.get('architecture'),
        checkpoint_id=source.get(CHECKPOINT_ID_KEY), embed_dim=gallery.embed_dim,
        widths=[] if gallery.width is None else [gallery.width], count=len(gallery), next_item_id=len(gallery),
        id_column=gallery.id_column, kind=spec.kind, parameters=spec.parameters(), metric='inner_product',
        training=training or None, faiss_version=faiss.__version__, sfsc_timm_version=__version__,
        history=[_event('build', gallery, len(gallery))])
    if (output / META_FILE).is_file():
        with exclusive(output):  # an index being replaced: not while another process adds to it
            write_index_folder(output, index, items, meta, faiss)
    else:
        write_index_folder(output, index, items, meta, faiss)
    return GalleryIndex(output, meta, items, index, faiss)


def _event(operation: str, embeddings: Optional[EmbeddingFile], count: int) -> Dict[str, Any]:
    event = dict(operation=operation, count=count)
    if embeddings is not None:
        event.update(source=embeddings.name, width=embeddings.width)
    return event


class GalleryIndex:
    """An index folder in memory: ``search`` it, ``add`` to it, ``remove`` from it (each change is written back
    whole, under an exclusive lock). Open one with :meth:`open` or make one with :func:`build_index`."""

    def __init__(self, folder: Union[str, Path], meta: Dict[str, Any], items: pa.Table, index: Any, faiss):
        self.folder = Path(folder)
        self.meta = meta
        self.items = items
        self._index = index
        self._faiss = faiss
        self.spec = IndexSpec(kind=meta['kind'], **meta['parameters'])
        apply_search_defaults(index, self.spec, faiss)

    @classmethod
    def open(cls, folder: Union[str, Path]) -> 'GalleryIndex':
        """The index in ``folder``.

        Raises:
            FileNotFoundError: no such folder. IndexFolderError: not an index folder, or a damaged one.
        """
        faiss = import_faiss()
        meta, items, index = read_index_folder(folder, faiss)
        return cls(folder, meta, items, index, faiss)

    def __len__(self) -> int:
        return self.items.num_rows

    @property
    def embed_dim(self) -> int:
        return int(self.meta['embed_dim'])

    @property
    def id_column(self) -> str:
        return self.meta['id_column']

    @property
    def item_ids(self) -> np.ndarray:
        """(N,) the stable ids of the items, ascending."""
        return self.items.column(ITEM_ID).to_numpy()

    def gallery_ids(self, item_ids: np.ndarray) -> pa.Array:
        """The gallery ids (paths or dataset ids) of ``item_ids``; null where an id is -1 (no hit)."""
        flat = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        known, column = self.item_ids, self.items.column(self.id_column)
        if not len(known):
            return pa.nulls(flat.size, type=column.type)
        positions = np.searchsorted(known, flat).clip(max=len(known) - 1)
        return column.take(pa.array(positions, mask=(flat < 0) | (known[positions] != flat)))

    def vectors(self, item_ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``item_ids`` (decoded, so approximate, for ivf-pq)."""
        return self._index.reconstruct_batch(np.ascontiguousarray(item_ids, dtype=np.int64))

    def info(self) -> Dict[str, Any]:
        """What index.json records, with the size of the folder's files."""
        size = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
        return dict(self.meta, folder=str(self.folder), bytes_on_disk=size)

    # ---- search ----

    def search(self, queries: Embeddings, k: int = 10, *, nprobe: Optional[int] = None,
               ef_search: Optional[int] = None, rerank: Optional[RerankOptions] = None,
               rerank_candidates: int = DEFAULT_RERANK_CANDIDATES, query_expansion: Optional[QueryExpansion] = None,
               allow_other_checkpoint: bool = False) -> SearchResult:
        """The top ``k`` gallery items of every query, best first.

        Args:
            queries: embeddings of any width of the index's checkpoint (an embed Parquet file, an
                :class:`EmbeddingFile`, or an (Q, D) array, which carries no model to check).
            k: hits per query.
            nprobe: IVF lists to scan (default: the index's); ef_search: HNSW beam (default: the index's).
            rerank: re-rank the top ``rerank_candidates`` hits of each query by k-reciprocal re-ranking among them.
            query_expansion: average query expansion over the index's hits before searching.
            allow_other_checkpoint: search with embeddings of another (or an unrecorded) checkpoint.

        Raises:
            IncompatibleEmbeddings: another embedding size, or another checkpoint (unless allowed).
        """
        started = time.perf_counter()
        queries = _embeddings(queries)
        note = check_same_checkpoint(queries.metadata, f'queries {queries.name}', self.meta,
                                     f'the index {self.folder}', allow_other_checkpoint)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f'--k must be an integer >= 1, got {k!r}.')
        if isinstance(rerank_candidates, bool) or not isinstance(rerank_candidates, (int, np.integer)) or \
                rerank_candidates < 1:
            raise UsageError(f'--rerank-candidates must be an integer >= 1, got {rerank_candidates!r}.')
        params = search_parameters(self.spec, self._faiss, nprobe, ef_search)
        vectors = queries.vectors
        if query_expansion is not None:
            vectors = self._expand(vectors, query_expansion, params)
        found = max(1, min(k, len(self)))
        if rerank is None:
            scores, hits = self._search(vectors, found, params)
            distances = None
        else:
            candidates = max(1, min(max(rerank_candidates, k), len(self)))
            scores, hits, distances = self._rerank(vectors, candidates, found, rerank, params)
        seconds = time.perf_counter() - started
        metadata = dict(
            index=str(self.folder), kind=self.spec.kind, parameters=self.spec.parameters(), k=int(k),
            nprobe=nprobe, ef_search=ef_search, queries=queries.name, query_width=queries.width,
            gallery_widths=self.meta.get('widths'), checkpoint_id=self.meta.get(CHECKPOINT_ID_KEY),
            query_checkpoint_id=queries.metadata.get(CHECKPOINT_ID_KEY), note=note, seconds=seconds,
            rerank=None if rerank is None else dict(rerank.to_dict(), candidates=int(candidates)),
            aqe=None if query_expansion is None else query_expansion.to_dict())
        return SearchResult(queries.ids, queries.id_column, hits, self.gallery_ids(hits), self.id_column, scores,
                            distances, metadata)

    def _search(self, vectors: np.ndarray, k: int, params):
        if len(self) == 0:
            return np.full((len(vectors), k), np.nan, np.float32), np.full((len(vectors), k), -1, np.int64)
        scores, hits = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k, params=params)
        return np.where(hits >= 0, scores, np.nan).astype(np.float32), hits

    def _neighbours(self, hits: np.ndarray) -> np.ndarray:
        """(Q, c, D) stored vectors of the hits; zeros where there is no hit."""
        out = np.zeros((*hits.shape, self.embed_dim), dtype=np.float32)
        valid = hits >= 0
        if valid.any():
            out[valid] = self.vectors(hits[valid])
        return out

    def _expand(self, vectors: np.ndarray, options: QueryExpansion, params) -> np.ndarray:
        """Average query expansion (sfsc_timm.eval.reranking) over each query's top hits in the index."""
        out = []
        for start in range(0, len(vectors), _SEARCH_BATCH):
            block = vectors[start:start + _SEARCH_BATCH]
            scores, hits = self._search(block, max(1, min(options.k, len(self))), params)
            similarities = torch.from_numpy(np.nan_to_num(scores, nan=0.0))  # no hit: weight 0, vector 0
            out.append(expand_queries(torch.from_numpy(block), torch.from_numpy(self._neighbours(hits)),
                                      similarities, options.alpha).numpy())
        return np.concatenate(out)

    def _rerank(self, vectors: np.ndarray, candidates: int, k: int, options: RerankOptions, params):
        """Each query's top ``candidates`` hits, re-ranked by k-reciprocal re-ranking among themselves; top ``k``."""
        scores_out = np.full((len(vectors), k), np.nan, np.float32)
        hits_out = np.full((len(vectors), k), -1, np.int64)
        distances_out = np.full((len(vectors), k), np.nan, np.float32)
        for start in range(0, len(vectors), _RERANK_SEARCH_BATCH):
            block = vectors[start:start + _RERANK_SEARCH_BATCH]
            scores, hits = self._search(block, candidates, params)
            neighbours = torch.from_numpy(self._neighbours(hits))
            with _one_thread():
                for first in range(0, len(block), _RERANK_BATCH):
                    rows = np.arange(first, min(first + _RERANK_BATCH, len(block)))
                    full = rows[(hits[rows] >= 0).all(1)]  # the usual case: solved together
                    reranked = dict(zip(full.tolist(), rerank_each_query(block[full], neighbours[full],
                                                                         options=options)))
                    for row in rows:
                        valid = np.flatnonzero(hits[row] >= 0)  # an IVF search can find fewer than asked for
                        if not valid.size:
                            continue
                        distances = reranked[row] if row in reranked else \
                            k_reciprocal_distances(block[row:row + 1], neighbours[row, valid], options=options)[0]
                        top = torch.argsort(distances, stable=True)[:k].numpy()
                        hits_out[start + row, :top.size] = hits[row, valid[top]]
                        scores_out[start + row, :top.size] = scores[row, valid[top]]
                        distances_out[start + row, :top.size] = distances.numpy()[top]
        return scores_out, hits_out, distances_out

    # ---- changes ----

    def add(self, embeddings: Embeddings, *, allow_other_checkpoint: bool = False) -> np.ndarray:
        """Append items (any width of the index's checkpoint) under new ids; the folder is rewritten whole.

        Returns:
            The new items' ids, after every id given before (ids are never reused).

        Raises:
            IncompatibleEmbeddings: another embedding size or checkpoint (unless allowed).
            UsageError: ids already in the index, or ids of another column or type.
        """
        new = _embeddings(embeddings)
        check_same_checkpoint(new.metadata, new.name, self.meta, f'the index {self.folder}', allow_other_checkpoint)
        ids = self._as_gallery_ids(new)
        check_unique_ids(ids, new.name)
        present = pc.is_in(ids, value_set=self.items.column(self.id_column))
        if pc.any(present).as_py():
            shown = ', '.join(repr(v.as_py()) for v in ids.filter(present)[:3])
            raise UsageError(f'{new.name}: {pc.sum(present).as_py()} ids are already in the index {self.folder} '
                             f'({shown}); remove them first (sfsc-timm index remove) to replace them.')
        first = int(self.meta['next_item_id'])
        item_ids = np.arange(first, first + len(new), dtype=np.int64)
        widths = sorted(set(self.meta.get('widths') or []) | ({new.width} if new.width is not None else set()))

        def change() -> Dict[str, Any]:
            self._index.add_with_ids(new.vectors, item_ids)
            self.items = pa.concat_tables([self.items, pa.table({ITEM_ID: item_ids, self.id_column: ids})])
            return dict(next_item_id=first + len(new), widths=widths, event=_event('add', new, len(new)))
        self._commit(change)
        return item_ids

    def remove(self, ids: Optional[Iterable[Any]] = None, *, item_ids: Optional[Iterable[int]] = None) -> int:
        """Remove items by gallery id (paths or dataset ids) or by item id; the others keep their ids.

        Returns:
            How many items were removed.

        Raises:
            UsageError: ids that are not in the index (nothing is removed then), or neither / both arguments.
        """
        if (ids is None) == (item_ids is None):
            raise UsageError('name the items to remove by their ids (paths) or by their item ids, one of the two.')
        if ids is not None:
            wanted = self._cast_ids(pa.array(list(ids)), 'the ids to remove')
            positions = pc.index_in(wanted, value_set=self.items.column(self.id_column))
            unknown = wanted.filter(pc.is_null(positions))
            removed = self.item_ids[np.unique(positions.drop_null().to_numpy())]
        else:
            wanted = np.unique(np.asarray(list(item_ids), dtype=np.int64))
            unknown = pa.array(wanted[~np.isin(wanted, self.item_ids)])
            removed = wanted
        if len(unknown):
            shown = ', '.join(repr(v.as_py()) for v in unknown[:5]) + (', ...' if len(unknown) > 5 else '')
            raise UsageError(f'{len(unknown)} of the items to remove are not in the index {self.folder} ({shown}); '
                             'nothing was removed. Check the ids (sfsc-timm index info lists the id column).')

        def change() -> Dict[str, Any]:
            self._remove_vectors(removed)
            keep = ~np.isin(self.item_ids, removed)
            self.items = self.items.filter(pa.array(keep))
            return dict(event=_event('remove', None, int(removed.size)))
        self._commit(change)
        return int(removed.size)

    def _remove_vectors(self, removed: np.ndarray) -> None:
        faiss, removed = self._faiss, np.ascontiguousarray(removed, dtype=np.int64)
        if self.spec.kind in ('ivf-flat', 'ivf-pq'):  # the hashtable direct map takes an array of ids
            self._index.remove_ids(faiss.IDSelectorArray(removed.size, faiss.swig_ptr(removed)))
        elif self.spec.kind == 'flat':
            self._index.remove_ids(faiss.IDSelectorBatch(removed))
        else:  # HNSW cannot unlink nodes: the graph is rebuilt from the vectors it stores (exact, HNSWFlat)
            stored = faiss.vector_to_array(self._index.id_map)
            keep = ~np.isin(stored, removed)
            graph = faiss.downcast_index(self._index.index)
            vectors = graph.reconstruct_n(0, graph.ntotal)[keep] if graph.ntotal else \
                np.zeros((0, self.embed_dim), np.float32)
            self._index = create_index(self.spec, self.embed_dim, faiss)
            self._index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(stored[keep]))

    def _commit(self, change) -> None:
        """Apply ``change`` (which returns the metadata to update) and write the folder, under the lock; on any
        failure the index is read back from disk, so memory and folder never disagree."""
        with exclusive(self.folder):
            if read_meta(self.folder).get('generation') != self.meta.get('generation'):
                raise UsageError(f'{self.folder} was changed by another process since it was opened; open it again.')
            try:
                update = change()
                event = update.pop('event')
                meta = dict(self.meta, **update, count=self.items.num_rows,
                            generation=int(self.meta.get('generation', 0)) + 1,
                            history=list(self.meta.get('history', [])) + [event])
                write_index_folder(self.folder, self._index, self.items, meta, self._faiss)
                self.meta = meta
            except BaseException:
                self.meta, self.items, self._index = read_index_folder(self.folder, self._faiss)
                apply_search_defaults(self._index, self.spec, self._faiss)
                raise

    def _as_gallery_ids(self, new: EmbeddingFile) -> pa.Array:
        if new.id_column != self.id_column and new.path is not None:
            raise UsageError(f'{new.name} names its items by {new.id_column!r}, the index {self.folder} by '
                             f'{self.id_column!r}; embed them with --id-column {self.id_column}.')
        return self._cast_ids(new.ids, new.name)

    def _cast_ids(self, ids: pa.Array, where: str) -> pa.Array:
        target = self.items.schema.field(self.id_column).type
        if ids.type == target:
            return ids
        try:
            return ids.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise UsageError(f'{where}: ids of type {ids.type} cannot be the index\'s {self.id_column!r} ids '
                             f'({target}).') from None

    def describe(self) -> str:
        """One line: kind, count, widths, model."""
        return (f'{self.spec.kind}, {len(self):,} items, {_describe_width(self.meta.get("widths") or [])}, '
                f'D={self.embed_dim}, {self.meta.get("model") or "model unknown"}')


def summary_lines(index: GalleryIndex) -> List[str]:
    """``sfsc-timm index info``'s lines."""
    info = index.info()
    training = info.get('training')
    lines = [
        f'{index.folder}: {index.describe()}',
        f'checkpoint: {info.get("checkpoint_id") or "not recorded"}; architecture {info.get("architecture")}',
        f'ids: {index.id_column} ({index.items.schema.field(index.id_column).type}); item ids '
        f'{int(index.item_ids.min()) if len(index) else "-"}..{int(index.item_ids.max()) if len(index) else "-"}, '
        f'next {info["next_item_id"]}',
        f'kind: {index.spec.kind} {index.spec.parameters() or ""}'.rstrip(),
        f'trained on: {training["vectors"]:,} vectors (seed {training["seed"]})' if training else 'trained on: -',
        f'faiss {info["faiss_version"]}, sfsc-timm {info["sfsc_timm_version"]}; {info["bytes_on_disk"]:,} bytes on '
        f'disk; generation {info["generation"]}',
    ]
    return lines
