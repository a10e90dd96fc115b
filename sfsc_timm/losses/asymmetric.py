""" Asymmetric metric learning (Budnik & Avrithis, CVPR 2021, "Asymmetric metric learning for knowledge transfer",
arXiv 2006.16331): a metric learning loss whose anchors come from the student (the query model) and whose positives
and negatives come from the frozen teacher (the gallery model), so the student learns to search the teacher's index.
"""
import torch
import torch.nn.functional as F

__all__ = ['ASYMMETRIC_MARGIN', 'asymmetric_contrastive_loss']

# our choice: with L2-normalised embeddings a negative stops pushing beyond distance 0.7 (cosine below 0.755)
ASYMMETRIC_MARGIN = 0.7


def asymmetric_contrastive_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                                margin: float = ASYMMETRIC_MARGIN) -> torch.Tensor:
    """The asymmetric contrastive loss of a batch: student anchors against the teacher's embeddings of the batch.

    Of the losses Budnik & Avrithis make asymmetric, this is the contrastive one (Hadsell et al. 2006, in the form
    Radenović et al. 2018 train retrieval models with): on L2-normalised embeddings, with ``d_ij = ||s_i - t_j||``,

    ``loss = mean_i [ mean_{j in P(i)} d_ij^2 / 2 + mean_{j in N(i)} max(0, margin - d_ij)^2 / 2 ]``

    where ``P(i)`` are the batch items with anchor i's label, its own image included (so every anchor has a
    positive, whatever the sampler), and ``N(i)`` the items of other labels (an anchor without any contributes its
    positive term alone). Averaging each anchor's positives and negatives separately keeps the balance between
    attraction and repulsion the same for any P x K batch. For anchor i's own image ``d_ii^2 / 2 = 1 - cos(s_i,
    t_i)``, the embedding regression: with one image per label and no negative within the margin the two losses agree.

    Args:
        student: ``(B, D)`` student embeddings (the anchors; gradients flow into them).
        teacher: ``(B, D)`` teacher embeddings of the same images; used as given, so detach them to keep the teacher
            fixed.
        labels: ``(B,)`` integer labels.
        margin: Distance beyond which a negative costs nothing.

    Returns:
        The scalar loss.
    """
    # low-precision embeddings lose the small distances in the |a|^2 + |b|^2 - 2ab expansion
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    sq_dist = (2. - 2. * s @ t.t()).clamp_min(0.)  # unit vectors: |s - t|^2 = 2 - 2 cos
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    positive = (sq_dist * same).sum(1) / same.sum(1) / 2.  # the diagonal is always a positive: no division by zero
    # clamp before the square root: d = 0 has an infinite derivative (its term is zero whenever d < margin anyway)
    hinge = (margin - sq_dist.clamp_min(1e-12).sqrt()).clamp_min(0.).pow(2) / 2.
    num_negative = (~same).sum(1)
    negative = (hinge * ~same).sum(1) / num_negative.clamp_min(1)
    return (positive + negative).mean()
