""" `evaluate` metric module: retrieval / person re-ID mAP, CMC and mINP, as computed by sfsc-timm.

Shipped inside the package and loaded from its path, so it works offline (no Hub access, `HF_HUB_OFFLINE=1`)::

    import evaluate
    import sfsc_timm.eval

    metric = evaluate.load(sfsc_timm.eval.METRIC_PATH)   # the path of this file

Inputs: one row per embedded image; query rows and gallery rows mixed in any order, over any number of `add_batch`
/ `add` calls (each batch can come straight from a data loader):

- `predictions`: the embedding, a sequence of floats (every row the same length; stored as float32);
- `references`: identity / class label, int;
- `is_query`: True for a query row, False for a gallery row;
- `cameras` (optional): camera id, int. Give it for every row or for none; when given, gallery rows with the
  query's identity and camera are ignored (re-ID protocol);
- `sample_ids` (optional): sample id, int. A gallery row with the query's sample id is ignored, so when query and
  gallery share samples, add each shared sample twice (once as query, once as gallery) with the same id.

`compute` keyword arguments: `max_rank` (CMC length, default 10) and `chunk_size` (queries per block, default
automatic). Example::

    for batch in loader:
        emb = model(batch['image'])
        metric.add_batch(predictions=emb, references=batch['label'], is_query=batch['is_query'],
                         cameras=batch['camera'])
    result = metric.compute(max_rank=10)   # {'mAP', 'cmc', 'mINP', 'num_valid_queries', 'num_skipped_queries'}

The numbers are those of `sfsc_timm.eval.retrieval_metrics` (this module calls it; it does not re-implement it):
cosine distance on L2-normalised float32 embeddings, exact ranking of the whole gallery, a negative tied with a
positive ranks before it, queries without a positive are skipped and counted. Rows travel through Arrow as Python
lists, so for very large sets (Market-1501 and up) calling `retrieval_metrics` on tensors directly is much faster.
"""
from typing import Any, Dict, Optional

import datasets
import evaluate
import numpy as np

from sfsc_timm.eval.retrieval import retrieval_metrics

_DESCRIPTION = (
    'Retrieval / person re-identification metrics (mAP, CMC rank-k, mINP) with cosine distance over an exact '
    'ranking of the whole gallery, the Market-1501 camera rule and self-match exclusion.')

_KWARGS_DESCRIPTION = """
Args:
    predictions: embeddings, one sequence of floats per row.
    references: identity / class label per row (int).
    is_query: True for query rows, False for gallery rows.
    cameras: optional camera id per row (int); all rows or none.
    sample_ids: optional sample id per row (int); a gallery row never matches the query with the same id.
    max_rank: length of the CMC curve (default 10).
    chunk_size: queries per block (default automatic).
Returns:
    mAP: mean average precision over valid queries, in [0, 1].
    cmc: list of rank-1 .. rank-max_rank accuracies.
    mINP: mean inverse negative penalty.
    num_valid_queries: queries with at least one positive in the gallery.
    num_skipped_queries: queries without one (excluded from the averages).
"""

_CITATION = """
@inproceedings{wu2023sfsc,
  title={Switchable Representation Learning Framework with Self-compatibility},
  author={Wu, Shengsen and Bai, Yan and Lou, Yihang and Linghu, Xiongkun and He, Jianzhong and Duan, Ling-Yu},
  booktitle={CVPR},
  year={2023}
}
"""

_OPTIONAL_COLUMNS = ('cameras', 'sample_ids')


def _with_optional_columns(columns: Dict[str, Any], num_rows: Optional[int]) -> Dict[str, Any]:
    """Fill the optional columns the caller left out with nulls (evaluate requires every feature in every call).

    `num_rows` None means a single example (`add`), so the fill is a scalar None instead of a column of them.
    """
    columns = dict(columns)
    for name in _OPTIONAL_COLUMNS:
        if columns.get(name) is None:
            columns[name] = None if num_rows is None else [None] * num_rows
    return columns


def _optional_codes(values: list, name: str) -> Optional[np.ndarray]:
    missing = sum(v is None for v in values)
    if missing == len(values):
        return None
    if missing:
        raise ValueError(
            f'{name} is missing for {missing} of {len(values)} rows: give {name} for every row (query and gallery) '
            f'or for none.')
    return np.asarray(values, dtype=np.int64)


class SfscRetrieval(evaluate.Metric):
    """mAP / CMC / mINP for query-gallery retrieval; see the module docstring for the input format."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                'predictions': datasets.Sequence(datasets.Value('float32')),
                'references': datasets.Value('int64'),
                'is_query': datasets.Value('bool'),
                'cameras': datasets.Value('int64'),
                'sample_ids': datasets.Value('int64'),
            }),
            reference_urls=['https://arxiv.org/abs/2206.08289'],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add rows; `cameras` and `sample_ids` may be left out (see the module docstring)."""
        num_rows = len(predictions) if predictions is not None else 0
        super().add_batch(
            predictions=predictions, references=references, **_with_optional_columns(kwargs, num_rows))

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one row; `cameras` and `sample_ids` may be left out."""
        super().add(prediction=prediction, reference=reference, **_with_optional_columns(kwargs, None))

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute over everything added, plus the rows passed here (if any)."""
        if predictions is not None or references is not None:
            num_rows = len(predictions) if predictions is not None else len(references)
            kwargs = _with_optional_columns(kwargs, num_rows)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, is_query, cameras, sample_ids, max_rank=10, chunk_size=None):
        try:
            embeddings = np.asarray(predictions, dtype=np.float32)
        except ValueError:
            raise ValueError('predictions (embeddings) must all have the same length.') from None
        if any(label is None for label in references):
            raise ValueError('references (labels) is missing for some rows: every row needs its label.')
        if any(role is None for role in is_query):
            raise ValueError('is_query is missing for some rows: mark every row as query (True) or gallery (False).')
        is_query = np.asarray(is_query, dtype=bool)
        if not is_query.any():
            raise ValueError('No row has is_query=True: mark the query rows (the others form the gallery).')
        labels = np.asarray(references, dtype=np.int64)
        cameras = _optional_codes(cameras, 'cameras')
        sample_ids = _optional_codes(sample_ids, 'sample_ids')
        is_gallery = ~is_query
        return retrieval_metrics(
            query=embeddings[is_query],
            gallery=embeddings[is_gallery],
            query_labels=labels[is_query],
            gallery_labels=labels[is_gallery],
            query_cameras=None if cameras is None else cameras[is_query],
            gallery_cameras=None if cameras is None else cameras[is_gallery],
            query_ids=None if sample_ids is None else sample_ids[is_query],
            gallery_ids=None if sample_ids is None else sample_ids[is_gallery],
            max_rank=max_rank,
            chunk_size=chunk_size,
        )
