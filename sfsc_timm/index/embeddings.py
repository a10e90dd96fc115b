"""The embedding files an index is built from and searched with: ``sfsc-timm embed``'s Parquet output.

An id column (named by the metadata's ``id_column``) and ``embedding``, a fixed-size list of float32 of unit norm,
with the writer's metadata (model, architecture, width, embed_dim, checkpoint_id) as JSON under the schema key
``sfsc``. Everything that would make an index silently wrong is refused here, in one line naming the file.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import UsageError
from ..inference.embed import METADATA_KEY

__all__ = ['EmbeddingFile', 'EmbeddingFileError', 'read_embedding_file', 'embeddings_from_array', 'EMBEDDING_COLUMN',
           'check_unique_ids']

EMBEDDING_COLUMN = 'embedding'
_NORM_TOLERANCE = 1e-3  # float32 rows written unit-norm are within ~1e-6 of 1; anything further was not normalised


class EmbeddingFileError(UsageError):
    """An embedding file that cannot be indexed or searched with; the message names the file and the fix."""


@dataclass
class EmbeddingFile:
    """Embeddings with their ids and the metadata of the model that wrote them.

    Attributes:
        ids: (N,) the id column (paths or dataset ids), as a pyarrow array of its own type.
        vectors: (N, D) float32, C-contiguous, unit rows.
        metadata: embed's metadata (``model``, ``width``, ``embed_dim``, ``checkpoint_id``, ...).
        id_column: the ids' column name.
        path: the file read, or None for embeddings made in memory.
    """
    ids: pa.Array
    vectors: np.ndarray
    metadata: Dict[str, Any]
    id_column: str
    path: Optional[Path] = None

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def width(self) -> Optional[float]:
        width = self.metadata.get('width')
        return None if width is None else float(width)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else 'the embeddings given'


def read_embedding_file(path: Union[str, Path]) -> EmbeddingFile:
    """Read and check a Parquet file written by ``sfsc-timm embed``.

    Raises:
        FileNotFoundError: no such file.
        EmbeddingFileError: not Parquet, not written by embed, no rows, embeddings not finite or not unit norm.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path} does not exist; pass a Parquet file written by sfsc-timm embed.')
    if path.is_dir():
        raise EmbeddingFileError(f'{path} is a folder; pass a Parquet file written by sfsc-timm embed '
                                 '(sfsc-timm embed MODEL IMAGES --output FILE.parquet).')
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        # pyarrow's own reason repeats the path and can be long; --debug shows it
        raise EmbeddingFileError(f'{path} is not a readable Parquet file (another format, or truncated); pass a '
                                 'file written by sfsc-timm embed.') from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or EMBEDDING_COLUMN not in table.column_names:
        raise EmbeddingFileError(f'{path} was not written by sfsc-timm embed (no {METADATA_KEY.decode()!r} metadata '
                                 f'or no {EMBEDDING_COLUMN!r} column); embed the images with sfsc-timm embed MODEL '
                                 'IMAGES --output FILE.parquet.')
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise EmbeddingFileError(f'{path}: its {METADATA_KEY.decode()!r} metadata is not JSON; the file is damaged, '
                                 'embed the images again.') from None
    id_column = metadata.get('id_column') or next((c for c in table.column_names if c != EMBEDDING_COLUMN), None)
    if id_column not in table.column_names:
        raise EmbeddingFileError(f'{path} has no id column {id_column!r} (columns: {table.column_names}); embed the '
                                 'images again.')
    vectors = _vectors(table.column(EMBEDDING_COLUMN), path)
    if metadata.get('embed_dim') is not None and int(metadata['embed_dim']) != vectors.shape[1]:
        raise EmbeddingFileError(f'{path}: the metadata says embed_dim {metadata["embed_dim"]} but the embeddings have '
                                 f'{vectors.shape[1]} dimensions; the file is damaged, embed the images again.')
    metadata = dict(metadata, embed_dim=vectors.shape[1], id_column=id_column)
    return EmbeddingFile(table.column(id_column).combine_chunks(), vectors, metadata, id_column, path)


def _vectors(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    column = column.combine_chunks()
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)):
        raise EmbeddingFileError(f'{path}: column {EMBEDDING_COLUMN!r} holds {column.type}, not lists of floats.')
    if len(column) == 0:
        raise EmbeddingFileError(f'{path} holds no embeddings (0 rows); embed at least one image.')
    if column.null_count:
        raise EmbeddingFileError(f'{path}: {column.null_count} rows have no embedding; embed the images again.')
    lengths = pc.list_value_length(column)
    dim = int(pc.min(lengths).as_py())
    if dim != int(pc.max(lengths).as_py()) or dim == 0:
        raise EmbeddingFileError(f'{path}: the embeddings do not all have the same (non-zero) length.')
    values = column.flatten()
    if not pa.types.is_floating(values.type):
        raise EmbeddingFileError(f'{path}: column {EMBEDDING_COLUMN!r} holds {values.type}, not floats.')
    # a copy: Arrow's buffer is read-only, and torch and faiss want writable, contiguous float32
    vectors = values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, order='C', copy=True)
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > _NORM_TOLERANCE))
    if bad.size:
        what = 'not finite (NaN or inf)' if not np.isfinite(norms[bad[0]]) else f'of norm {norms[bad[0]]:.4g}, not 1'
        raise EmbeddingFileError(f'{path}: {bad.size} embeddings (the first in row {bad[0]}) are {what}; the index '
                                 'ranks unit vectors by inner product. Embed the images with sfsc-timm embed, which '
                                 'normalises them.')
    return vectors


def embeddings_from_array(vectors: Any, ids: Any = None, metadata: Optional[Dict[str, Any]] = None) -> EmbeddingFile:
    """Embeddings made in memory: (N, D) vectors (normalised here), ids (default: the row numbers, ``index``), and
    the metadata of the model that made them (default: none, so no checkpoint identity is known)."""
    vectors = np.asarray(vectors.detach().cpu() if hasattr(vectors, 'detach') else vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f'embeddings must be a non-empty (N, D) array, got shape {vectors.shape}.')
    if not np.isfinite(vectors).all():
        raise ValueError('embeddings hold NaN or inf values; check the model output.')
    vectors = np.ascontiguousarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
    id_column = (metadata or {}).get('id_column') or 'index'
    ids = pa.array(np.arange(len(vectors)) if ids is None else list(ids))
    if len(ids) != len(vectors):
        raise ValueError(f'{len(ids)} ids for {len(vectors)} embeddings; give one id per row.')
    metadata = dict(metadata or {}, embed_dim=vectors.shape[1], id_column=id_column)
    return EmbeddingFile(ids, vectors, metadata, id_column)


def check_unique_ids(ids: pa.Array, where: str) -> None:
    """Refuse repeated ids: removing by id must mean one item."""
    if pc.count_distinct(ids).as_py() == len(ids) and not ids.null_count:
        return
    counts = pc.value_counts(ids)
    repeated = [v.as_py() for v, n in zip(counts.field('values'), counts.field('counts')) if n.as_py() > 1][:3]
    shown = ', '.join(map(repr, repeated)) if repeated else 'null'
    raise UsageError(f'{where} repeats ids ({shown}); every gallery item needs its own id. Embed them with a '
                     'unique --id-column (the default, the image paths, is unique).')
