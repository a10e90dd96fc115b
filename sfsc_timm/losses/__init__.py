""" Losses for SFSC training: the uncertainty-based compatible loss, width priorities, batch-hard triplet (within a
width and across widths), the cosine classifier and the baselines' embedding regression and asymmetric contrastive
loss. """
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .dirichlet import (
    EVIDENCE_FUNCTIONS, dirichlet_expected_ce, dirichlet_uncertainty, evidence_to_alpha, kl_dirichlet_to_uniform,
    remove_target_evidence, smooth_target,
)
from .alignment import embedding_regression, posterior_distillation
from .cosine_classifier import CLASSIFIERS, DEFAULT_COSINE_SCALE, cosine_logits
from .asymmetric import ASYMMETRIC_MARGIN, asymmetric_contrastive_loss
from .triplet import BatchHardTripletLoss, cross_batch_hard_triplet, pairwise_euclidean
from .uncertainty import UncertaintyCompatibleLoss, UncertaintyLossOutput, width_priorities

__all__ = [
    'EVIDENCE_FUNCTIONS', 'dirichlet_expected_ce', 'dirichlet_uncertainty', 'evidence_to_alpha',
    'kl_dirichlet_to_uniform', 'remove_target_evidence', 'smooth_target', 'embedding_regression',
    'posterior_distillation',
    'ASYMMETRIC_MARGIN', 'asymmetric_contrastive_loss', 'UncertaintyCompatibleLoss',
    'UncertaintyLossOutput', 'width_priorities',
    'CLASSIFIERS', 'DEFAULT_COSINE_SCALE', 'cosine_logits',
    'BatchHardTripletLoss', 'cross_batch_hard_triplet', 'pairwise_euclidean', 'LabelSmoothingCrossEntropy',
    'SoftTargetCrossEntropy',
]
