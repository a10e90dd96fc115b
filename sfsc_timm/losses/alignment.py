""" Cross-width alignment: one width's embedding regressed onto another's, or its class posterior distilled from
another's (the teacher detached by the caller). """
import torch
import torch.nn.functional as F

__all__ = ['embedding_regression', 'posterior_distillation']


def embedding_regression(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch: the student embeds into the teacher's (cosine) space.

    The teacher is used as given; detach it to train the student alone (in-place distillation, asymmetric
    training).
    """
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()


def posterior_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float = 1.0) -> torch.Tensor:
    """Mean ``T^2 KL(softmax(teacher / T) || softmax(student / T))`` over the batch: the student predicts what the
    teacher predicts (Hinton et al. 2015; in-place distillation of Yu & Huang 2019, Universally Slimmable Networks).

    A temperature ``T > 1`` softens both posteriors, so the teacher's ranking of the wrong classes (which identities
    look alike) weighs more; the ``T^2`` keeps the gradient's scale that of ``T = 1`` (Hinton et al. 2015).
    Computed in float32 whatever the autocast dtype: the log-softmax of hundreds of classes needs it.
    """
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, got {temperature}.')
    student = F.log_softmax(student_logits.float() / temperature, -1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, -1)
    return temperature ** 2 * F.kl_div(student, teacher, log_target=True, reduction='batchmean')
