""" The package's training methods: the SFSC paper's and the one the recipes recommend for many identities.

A method is an algorithm's step class with its option values (:mod:`.options`); a recipe may change them under the
method's name. Adding a method (docs/design.md, "Methods and their options"): its step class, or an existing one; its
options dataclass, or an existing one; one ``register_method`` call, here or in your own code. The ablations and
variants that only the published tables need are presets that ``benchmarks/experiments/methods.py`` registers.
"""
from torch import nn

from .baselines import IndependentStep, StagedStep, SupernetSumStep
from .distributed import DistInfo
from .registry import METHODS, Method, register_method
from .steps import SFSCStep, TrainStep

__all__ = ['METHODS', 'Method', 'create_train_step', 'register_method']

register_method(
    'sfsc', SFSCStep,
    "SFSC as the public reference trains it: the widest width on cross-entropy, the narrower ones on the SFSC paper's "
    'uncertainty loss (softplus evidence, KL weight 0.0005), uniform priorities, PCGrad merged by the mean')
register_method(
    'sfsc_ce_ens', SFSCStep,
    'ours, for many identities (docs/open_set.md): SFSC with cross-entropy at every width, priorities relative to '
    'the widest width, and distillation of all widths\' mean posterior into every width (weight 0.5)',
    width_loss='cross_entropy', evidence='exp', kl_coef=0.0, priority='relative', gradient_merge='sum', lambda_kd=0.5,
    kd_teacher='ensemble')
register_method('bct_s', SupernetSumStep,
                'BCT-S: the supernet, cross-entropy of every width through the shared classifier, losses summed')
register_method('asymmetric_s', SupernetSumStep,
                "Asymmetric-S: the supernet, the narrower widths' asymmetric loss against the widest width's "
                'embeddings', student_loss='asymmetric')
register_method('independent', IndependentStep, 'one model per width, each its own cross-entropy (no compatibility)')
register_method('bct', StagedStep,
                "BCT: the full model first, then the narrower models with BCT's influence loss through its classifier")
register_method('asymmetric', StagedStep,
                "Asymmetric: the full model first, then the narrower models' asymmetric loss against its embeddings",
                transfer_loss='asymmetric')


def create_train_step(cfg, net: nn.Module, dist_info: DistInfo) -> TrainStep:
    """The step object of ``cfg.method``, with ``cfg.options``."""
    if cfg.method not in METHODS:
        raise ValueError(f'unknown method {cfg.method!r}; available: {", ".join(METHODS)}.')
    return METHODS[cfg.method].step(net, cfg, dist_info)
