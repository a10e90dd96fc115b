""" Optimisation for SFSC: PCGrad-style gradient projection over widths, as a function and an optimizer wrapper. """
from .gradient_projection import GradientProjection
from .projection import ProjectionStats, gram_matrix, project_conflicting

__all__ = ['GradientProjection', 'ProjectionStats', 'gram_matrix', 'project_conflicting']
