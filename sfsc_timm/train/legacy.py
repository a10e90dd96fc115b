""" Recipes saved before the methods took typed options (one flat key per setting), read as today's.

Run folders, checkpoints and exported metrics keep the recipe their run trained with. Those written before the
options moved under the method's name hold every setting as a top-level key and may name a method that is now an
option value of another (``sfsc_exp`` is ``sfsc`` with exp evidence and no KL term). :func:`upgrade_saved_recipe`
turns such a recipe into today's form, with the values the run trained with, so that it resumes and compares.
"""
from typing import Any, Dict, Mapping, Tuple

from .options import options_fields

__all__ = ['FLAT_OPTION_KEYS', 'LEGACY_METHODS', 'upgrade_saved_recipe']

# the top-level keys of the flat recipes that are options now
FLAT_OPTION_KEYS = ('widest_loss', 'priority', 'gradient_merge', 'projection_granularity', 'kl_coef',
                    'kl_anneal_epochs', 'evidence', 'lambda_align', 'lambda_kd', 'kd_temperature', 'lambda_cross_tri',
                    'cross_tri_direction')
# keys added to the flat recipes after runs were saved without them -> the value those runs trained with
_MISSING_KEY_VALUES = dict(widest_loss='uncertainty', gradient_merge='sum')
_CROSS_ENTROPY = dict(widest_loss='cross_entropy', width_loss='cross_entropy')
# a saved method name -> (today's method, the options its step class fixed whatever the saved keys said)
LEGACY_METHODS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'sfsc': ('sfsc', {}),
    'sfsc_first_reading': ('sfsc', {}),
    'sfsc_exp': ('sfsc', {}),
    'sfsc_ipd': ('sfsc', {}),
    'sfsc_no_proj': ('sfsc', dict(projection='none')),
    'sfsc_no_unc': ('sfsc', dict(_CROSS_ENTROPY, priority='uniform')),
    'sfsc_ce': ('sfsc', _CROSS_ENTROPY),
    'sfsc_ce_kd': ('sfsc', _CROSS_ENTROPY),  # interim names of sfsc_ce with lambda_kd 1 and 0.3
    'sfsc_ce_kd03': ('sfsc', _CROSS_ENTROPY),
    'sfsc_ce_ens': ('sfsc_ce_ens', dict(_CROSS_ENTROPY, kd_teacher='ensemble')),
    'bct_s': ('bct_s', {}),
    'asymmetric_s': ('asymmetric_s', dict(student_loss='asymmetric')),
    'asymmetric_s_reg': ('asymmetric_s', dict(student_loss='regression')),
    'independent': ('independent', {}),
    'bct': ('bct', dict(transfer_loss='influence')),
    'asymmetric': ('asymmetric', dict(transfer_loss='asymmetric')),
    'asymmetric_reg': ('asymmetric', dict(transfer_loss='regression')),
}


def upgrade_saved_recipe(saved: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved recipe in today's form: unchanged when its options are already under a registered method's name; a
    flat one, or one of a former method that is a preset of the tables now and not registered, with its method
    renamed where it became options, and the options it trained with under that name.

    The flat form saved every setting, those its method ignored too: only the options of today's method are kept.
    A method name that is neither today's nor a former one is left for the config to refuse.
    """
    from .methods import METHODS  # late: the methods import torch-heavy modules
    values = dict(saved)
    name = values.get('method')
    if name not in LEGACY_METHODS:
        return values
    if isinstance(values.get(name), Mapping):
        if name in METHODS:
            return values
        # a run of a tables' preset (benchmarks/experiments/methods.py) resumed without it: its block holds every
        # option, so it is today's method with those options
        method = LEGACY_METHODS[name][0]
        values.update({'method': method, method: values.pop(name)})
        return values
    flat = {**_MISSING_KEY_VALUES, **{key: values.pop(key) for key in FLAT_OPTION_KEYS if key in values}}
    method, fixed = LEGACY_METHODS[name]
    names = set(options_fields(METHODS[method].options_class))
    options = {key: value for key, value in {**flat, **fixed}.items() if key in names}
    values['method'] = method
    values[method] = options
    return values
