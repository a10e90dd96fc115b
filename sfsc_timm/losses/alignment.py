""" Cross-width embedding alignment: one width's embedding regressed onto another's (detached) embedding. """
import torch
import torch.nn.functional as F

__all__ = ['embedding_regression']


def embedding_regression(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch: the student embeds into the teacher's (cosine) space.

    The teacher is used as given; detach it to train the student alone (in-place distillation, asymmetric
    training).
    """
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()
