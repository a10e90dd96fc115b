"""What a gallery search returns, as arrays and as the Parquet table ``sfsc-timm index search`` writes."""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic_io import check_destination, write_file_atomically
from ..inference.embed import METADATA_KEY, is_sfsc_parquet

__all__ = ['SearchResult', 'write_search_results']


@dataclass
class SearchResult:
    """The top hits of every query, best first.

    Attributes:
        query_ids: (Q,) the queries' ids; query_id_column: their column name.
        item_ids: (Q, k) stable item ids of the hits, -1 where a query has fewer than k.
        gallery_ids: (Q * k,) the hits' gallery ids (paths or dataset ids), row-major, null where there is no hit.
        gallery_id_column: the gallery ids' column name.
        scores: (Q, k) inner products (cosine similarities; approximate for ivf-pq), NaN where there is no hit.
        rerank_distances: (Q, k) k-reciprocal re-ranked distances the hits are ordered by, when re-ranked.
        metadata: how the search was made (index, kind, parameters, k, re-ranking), for the file's metadata.
    """
    query_ids: pa.Array
    query_id_column: str
    item_ids: np.ndarray
    gallery_ids: pa.Array
    gallery_id_column: str
    scores: np.ndarray
    rerank_distances: Optional[np.ndarray] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.item_ids.shape[1]

    def to_table(self) -> pa.Table:
        """One row per hit: ``query_<id>``, ``rank`` (1-based), ``item_id``, ``gallery_<id>``, ``score``
        (and ``rerank_distance``), queries in their order, hits best first."""
        found = (self.item_ids >= 0).reshape(-1)
        rows = np.flatnonzero(found)
        query_rows = rows // max(self.k, 1)
        columns = {
            f'query_{self.query_id_column}': self.query_ids.take(pa.array(query_rows)),
            'rank': pa.array((rows % max(self.k, 1) + 1).astype(np.int32)),
            'item_id': pa.array(self.item_ids.reshape(-1)[rows]),
            f'gallery_{self.gallery_id_column}': self.gallery_ids.take(pa.array(rows)),
            'score': pa.array(self.scores.reshape(-1)[rows].astype(np.float32)),
        }
        if self.rerank_distances is not None:
            columns['rerank_distance'] = pa.array(self.rerank_distances.reshape(-1)[rows].astype(np.float32))
        metadata = {METADATA_KEY: json.dumps(self.metadata).encode()}
        return pa.table(columns).replace_schema_metadata(metadata)


def check_results_destination(output: Union[str, Path]) -> None:
    """Refuse ``output`` when it is a folder or a file sfsc-timm did not write (the user's own Parquet file)."""
    check_destination(output, folder=False, fix='pass another .parquet file for --output', own_file=is_sfsc_parquet,
                      own_kind='a Parquet file sfsc-timm wrote')


def write_search_results(result: SearchResult, output: Union[str, Path]) -> Path:
    """Write ``result.to_table()`` to the Parquet file ``output``, whole or not at all; a folder, or a file that
    sfsc-timm did not write, is refused."""
    check_results_destination(output)
    table = result.to_table()
    return write_file_atomically(output, lambda temp: pq.write_table(table, temp))
