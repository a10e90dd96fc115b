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


def posterior_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(softmax(teacher) || softmax(student))`` over the batch: the student predicts what the teacher predicts
    (Hinton et al. 2015 at temperature 1; in-place distillation of Yu & Huang 2019, Universally Slimmable Networks).

    Computed in float32 whatever the autocast dtype: the log-softmax of hundreds of classes needs it.
    """
    return F.kl_div(F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.float(), -1),
                    log_target=True, reduction='batchmean')
