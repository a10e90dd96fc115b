""" The normalised (cosine) classifier: logits from the angle between the embedding and each class's weight.

``logits_c = s * cos(e, w_c)`` (NormFace, Wang et al. 2017; the normalised softmax of Zhai & Wu 2019, "Classification
is a Strong Baseline for Deep Metric Learning", which trains retrieval embeddings for unseen classes with it at
temperature 0.05, i.e. ``s = 20``). Retrieval ranks by cosine, so the loss then trains the geometry retrieval reads;
a linear classifier's logits also grow with ``|e|`` and ``|w_c|``, which ranking by cosine ignores.

The classifier's tensors are the network's own ``nn.Linear`` head: its weight rows are the class directions and its
bias is not used (it keeps its initial zeros), so checkpoints keep their layout.
"""
import torch
import torch.nn.functional as F

__all__ = ['CLASSIFIERS', 'DEFAULT_COSINE_SCALE', 'cosine_logits']

CLASSIFIERS = ('linear', 'cosine')
DEFAULT_COSINE_SCALE = 20.0  # Zhai & Wu 2019's temperature 0.05


def cosine_logits(embedding: torch.Tensor, weight: torch.Tensor, scale: float = DEFAULT_COSINE_SCALE) -> torch.Tensor:
    """``scale * cos(embedding_b, weight_c)``: `(B, D)` embeddings and `(C, D)` class weights -> `(B, C)` logits.

    Computed in float32 (under autocast too): the normalisation of low-precision rows loses the small cosines that
    separate hundreds of classes.
    """
    if embedding.shape[-1] != weight.shape[-1]:
        raise ValueError(f'embedding dimension {embedding.shape[-1]} does not match the classifier\'s '
                         f'{weight.shape[-1]}.')
    with torch.autocast(embedding.device.type, enabled=False):
        return scale * F.linear(F.normalize(embedding.float(), dim=-1), F.normalize(weight.float(), dim=-1))
