""" The methods only the published tables need, registered as presets of the package's algorithms.

The package registers the SFSC paper's methods and the one the recipes recommend (sfsc_timm/train/methods.py). The
tables also train the project's first reading of the SFSC paper, its open-set variants and the ablations; each is a
step class of the package with its own option values, registered here under the name its table row and its archived
runs use. Importing this module registers them; ``benchmarks/experiments/train.py`` is ``sfsc-timm train`` with them.
"""
from sfsc_timm.train import METHODS, SFSCStep, StagedStep, SupernetSumStep, register_method

__all__ = ['PRESETS', 'register_presets']

# the project's first reading of the SFSC paper: every width on the uncertainty loss with a KL weight 1 reached
# after 10 epochs, the paper's uncertainty priorities, the projected gradients summed (docs/design.md, "The SFSC step")
FIRST_READING = dict(widest_loss='uncertainty', kl_coef=1.0, kl_anneal_epochs=10.0, priority='uncertainty',
                     gradient_merge='sum')
_CROSS_ENTROPY = dict(widest_loss='cross_entropy', width_loss='cross_entropy')

# name -> (step class, summary, options)
PRESETS = {
    'sfsc_first_reading': (SFSCStep, 'our first reading of the SFSC paper (the main job\'s settings)', FIRST_READING),
    'sfsc_exp': (SFSCStep, 'the first reading with exp evidence and no KL term (docs/open_set.md)',
                 dict(FIRST_READING, evidence='exp', kl_coef=0.0)),
    'sfsc_ipd': (SFSCStep, 'sfsc_exp plus in-place distillation of the embedding (lambda_align 1)',
                 dict(FIRST_READING, evidence='exp', kl_coef=0.0, lambda_align=1.0)),
    'sfsc_ce': (SFSCStep, 'cross-entropy at every width, uncertainty priorities, the widest width\'s posterior '
                'distilled (docs/open_set.md)', dict(FIRST_READING, **_CROSS_ENTROPY, evidence='exp', kl_coef=0.0,
                                                    lambda_kd=0.5)),
    'sfsc_no_proj': (SFSCStep, 'ablation of sfsc: the per-width gradients merged, not projected',
                     dict(projection='none')),
    'sfsc_no_unc': (SFSCStep, "ablation of sfsc: cross-entropy at every width, uniform priorities (what the public "
                    "reference's SFSC commands train, SNET.USE_SFSC_LOSS False)", dict(_CROSS_ENTROPY)),
    'asymmetric_reg': (StagedStep, 'asymmetric with embedding regression instead (no labels)',
                       dict(transfer_loss='regression')),
    'asymmetric_s_reg': (SupernetSumStep, 'asymmetric_s with embedding regression instead (no labels)',
                         dict(student_loss='regression')),
}


def register_presets() -> None:
    """Register every preset not registered yet (importing this module does it once)."""
    for name, (step, summary, options) in PRESETS.items():
        if name not in METHODS:
            register_method(name, step, summary, **options)


register_presets()
