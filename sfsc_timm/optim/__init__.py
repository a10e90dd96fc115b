""" Optimisation for SFSC: per-width gradients combined by an object (PCGrad projection or plain sum), as a function
on a gradient matrix and as GradientProjection, composed around any torch optimizer. """
from .combination import MERGES, GradientCombination, PCGrad, Sum, pcgrad_coefficients
from .gradient_projection import GradientProjection
from .projection import ProjectionStats, count_layer_conflicts, gram_matrix, project_conflicting

__all__ = [
    'GradientCombination', 'GradientProjection', 'MERGES', 'PCGrad', 'ProjectionStats', 'Sum', 'count_layer_conflicts',
    'gram_matrix', 'pcgrad_coefficients', 'project_conflicting',
]
