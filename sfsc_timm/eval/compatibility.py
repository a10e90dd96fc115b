"""The cross-width compatibility matrix: mAP with queries embedded by one width and the gallery by another."""
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..models.kinds import SfscModel, model_kind
from .compat_report import summarize_compatibility
from .reranking import QueryExpansion, RerankOptions, average_query_expansion, k_reciprocal_distances
from .retrieval import rank_metrics_from_distances, retrieval_metrics


@dataclass
class Embeddings:
    """Embeddings of one dataset by one model, with the labels and cameras (-1: unknown) they were computed for."""
    features: torch.Tensor
    labels: torch.Tensor
    cameras: torch.Tensor

    @property
    def has_cameras(self) -> bool:
        return bool((self.cameras >= 0).all())


@dataclass
class CompatibilityResult:
    """``matrix[i][j]``: mAP with queries from ``widths[i]`` and gallery from ``widths[j]`` (fractions, 0..1)."""
    widths: Tuple[float, ...]
    matrix: list
    metrics: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # 'q->g' -> full retrieval_metrics dict

    @property
    def summary(self) -> Dict[str, Any]:
        return summarize_compatibility(self.matrix, self.widths)

    def to_dict(self) -> Dict[str, Any]:
        summary = self.summary
        return dict(widths=list(self.widths), matrix=self.matrix, mean=summary['mean'],
                    self_compatible=summary['self_compatible'], violations=summary['violations'],
                    metrics=self.metrics)


@torch.inference_mode()
def extract_embeddings(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, num_workers: int = 0,
                       device: Union[str, torch.device] = 'cpu', desc: Optional[str] = None,
                       progress: bool = True) -> Embeddings:
    """Embed every item of ``dataset`` (items ``(image, label, camera, index)``) with ``model``, in eval mode.

    The embedding is ``forward_head(forward_features(x), pre_logits=True)``: the D-dim output of the neck.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features, labels, cameras = [], [], []
    try:
        for images, label, camera, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            out = model.forward_head(model.forward_features(images.to(device)), pre_logits=True)
            features.append(out.float().cpu())
            labels.append(torch.as_tensor(label))
            cameras.append(torch.as_tensor(camera))
    finally:
        model.train(was_training)
    return Embeddings(torch.cat(features), torch.cat(labels), torch.cat(cameras))


def _models_by_width(models: Union[nn.Module, Mapping[float, nn.Module]], widths: Optional[Sequence[float]]):
    if isinstance(models, Mapping):
        chosen = tuple(sorted(widths or models))
        missing = [w for w in chosen if w not in models]
        if missing:
            raise ValueError(f'no model for widths {missing}; models are given for {sorted(models)}.')
        return chosen, lambda w: _Identity(models[w])
    if not isinstance(models, SfscModel) or not model_kind(models).switchable:
        raise TypeError('models must be a switchable network (a supernet or a ModelSet) or a mapping width -> model, '
                        f'got {type(models).__name__}.')
    chosen = tuple(sorted(widths or models.widths))
    return chosen, models.width


class _Identity:
    """Context manager yielding a fixed model, so static models and a switched supernet share one code path."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        return self.model

    def __exit__(self, *exc) -> None:
        return None


def _pair_metrics(query: Embeddings, gallery: Embeddings, max_rank: int, rerank: Optional[RerankOptions],
                  query_expansion: Optional[QueryExpansion]) -> Dict[str, Any]:
    """retrieval_metrics of one (query width, gallery width) pair, after query expansion and / or re-ranking."""
    cameras = query.has_cameras and gallery.has_cameras
    labels_and_cameras = dict(query_labels=query.labels, gallery_labels=gallery.labels,
                              query_cameras=query.cameras if cameras else None,
                              gallery_cameras=gallery.cameras if cameras else None, max_rank=max_rank)
    features = query.features
    if query_expansion is not None:
        features = average_query_expansion(features, gallery.features, options=query_expansion)
    if rerank is not None:
        distances = k_reciprocal_distances(features, gallery.features, options=rerank)
        return rank_metrics_from_distances(distances, **labels_and_cameras)
    return retrieval_metrics(query=features, gallery=gallery.features, **labels_and_cameras)


def compatibility_from_embeddings(query: Mapping[float, Embeddings], gallery: Mapping[float, Embeddings],
                                  widths: Sequence[float], max_rank: int = 10, rerank: Optional[RerankOptions] = None,
                                  query_expansion: Optional[QueryExpansion] = None) -> CompatibilityResult:
    """Fill ``M[q][g]`` from embeddings already extracted for every width.

    ``query_expansion`` expands each width-q query against the width-g gallery first (average query expansion);
    ``rerank`` then ranks by k-reciprocal re-ranked distances (``sfsc_timm.eval.reranking``).
    """
    matrix, metrics = [], {}
    for q in widths:
        row = []
        for g in widths:
            result = _pair_metrics(query[q], gallery[g], max_rank, rerank, query_expansion)
            metrics[f'{q:g}->{g:g}'] = result
            row.append(result['mAP'])
        matrix.append(row)
    return CompatibilityResult(tuple(widths), matrix, metrics)


def compatibility_matrix(models: Union[nn.Module, Mapping[float, nn.Module]], *, query: Dataset, gallery: Dataset,
                         widths: Optional[Sequence[float]] = None, batch_size: int = 256, num_workers: int = 0,
                         device: Union[str, torch.device] = 'cpu', max_rank: int = 10,
                         progress: bool = True, rerank: Optional[RerankOptions] = None,
                         query_expansion: Optional[QueryExpansion] = None) -> CompatibilityResult:
    """Compatibility matrix of a supernet (every width) or of one model per width (e.g. independent models).

    Each width's query and gallery features are extracted once, then every (query width, gallery width) pair is
    ranked. Datasets yield ``(image, label, camera, index)`` (``sfsc_timm.data.with_image_transform``).
    ``rerank`` / ``query_expansion``: as in :func:`compatibility_from_embeddings`.
    """
    chosen, at_width = _models_by_width(models, widths)
    query_emb, gallery_emb = {}, {}
    for w in chosen:
        with at_width(w) as model:
            query_emb[w] = extract_embeddings(model, query, batch_size=batch_size, num_workers=num_workers,
                                              device=device, desc=f'query  w={w:g}', progress=progress)
            gallery_emb[w] = extract_embeddings(model, gallery, batch_size=batch_size, num_workers=num_workers,
                                                device=device, desc=f'gallery w={w:g}', progress=progress)
    return compatibility_from_embeddings(query_emb, gallery_emb, chosen, max_rank=max_rank, rerank=rerank,
                                         query_expansion=query_expansion)
