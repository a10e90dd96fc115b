""" Losses for SFSC training: the uncertainty-based compatible loss, width priorities and batch-hard triplet. """
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .dirichlet import (
    EVIDENCE_FUNCTIONS, dirichlet_expected_ce, dirichlet_uncertainty, evidence_to_alpha, kl_dirichlet_to_uniform,
    remove_target_evidence,
)
from .alignment import embedding_regression
from .triplet import BatchHardTripletLoss, pairwise_euclidean
from .uncertainty import UncertaintyCompatibleLoss, UncertaintyLossOutput, width_priorities

__all__ = [
    'EVIDENCE_FUNCTIONS', 'dirichlet_expected_ce', 'dirichlet_uncertainty', 'evidence_to_alpha',
    'kl_dirichlet_to_uniform', 'remove_target_evidence', 'embedding_regression', 'UncertaintyCompatibleLoss',
    'UncertaintyLossOutput', 'width_priorities',
    'BatchHardTripletLoss', 'pairwise_euclidean', 'LabelSmoothingCrossEntropy', 'SoftTargetCrossEntropy',
]
