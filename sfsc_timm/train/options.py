""" Typed options of the training algorithms: what a recipe writes under the name of its method.

Each algorithm's step class names its options dataclass (``options_class``); a method is that class with its own
values (:mod:`.methods`). A recipe sets them under the method's name, so an option of another algorithm cannot be
written and needs no rule to refuse it::

    method: sfsc_ce_ens
    sfsc_ce_ens:
      lambda_kd: 0.3

The comment above a field is its help (``sfsc-timm train --help``), as for the recipe keys of
:class:`~sfsc_timm.train.TrainConfig`. Checks are generic: a ``Literal`` field takes one of its values, a float a
finite number ``>= 0`` (``> 0`` where the field's metadata says ``positive``); :meth:`check` holds the few relations
between one class's fields.
"""
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Type, TypeVar

from ..losses.dirichlet import EVIDENCE_FUNCTIONS
from ..optim.combination import MERGES
from .config_error import ConfigError

__all__ = ['SFSCOptions', 'SupernetSumOptions', 'StagedOptions', 'IndependentOptions', 'build_options',
           'options_fields', 'options_dict']

CROSS_TRI_DIRECTIONS = ('to_widest', 'mutual')


class _Options:
    """Base of the options classes: the relations between fields (none by default)."""

    def check(self) -> None:
        """Raises ConfigError when two fields contradict each other (e.g. a setting of a term whose weight is 0)."""


def _cross_triplet_check(options: Any) -> None:
    if options.cross_tri_direction != 'to_widest' and options.lambda_cross_tri == 0:
        raise ConfigError(f'option cross_tri_direction={options.cross_tri_direction!r} has no effect: there is no '
                          'cross-width triplet (lambda_cross_tri is 0); set lambda_cross_tri > 0, or leave '
                          'cross_tri_direction out.')


@dataclass(frozen=True)
class SFSCOptions(_Options):
    """The SFSC step's options: the supernet, one backward per width, the per-width gradients projected (PCGrad)."""
    # the widest width's loss: cross_entropy (the public reference's) or uncertainty (the SFSC paper's uncertainty-based
    # compatible loss, as the narrower widths)
    widest_loss: Literal['cross_entropy', 'uncertainty'] = 'cross_entropy'
    # the narrower widths' loss: uncertainty (the SFSC paper's) or cross_entropy (its priorities still read the
    # Dirichlet uncertainty of the logits' evidence)
    width_loss: Literal['uncertainty', 'cross_entropy'] = 'uncertainty'
    evidence: Literal[EVIDENCE_FUNCTIONS] = 'softplus'  # how logits become Dirichlet evidence: softplus or exp
    kl_coef: float = 0.0005  # weight of the uncertainty loss's Dirichlet KL term
    # the KL weight rises linearly to kl_coef over this many epochs; 0: kl_coef from the first step
    kl_anneal_epochs: float = 0.0
    # width priorities: uniform (none: the public reference's), uncertainty (pi_w = m u_w / sum_j u_j, the SFSC
    # paper's) or relative (the same ratios, the widest width's weight held at 1, each at most m)
    priority: Literal['uniform', 'uncertainty', 'relative'] = 'uniform'
    # how the widths' projected gradients of the shared parameters merge: mean (the public reference's PCGrad) or sum
    # (PCGrad's paper); a width's private BatchNorm parameters keep their own gradient either way
    gradient_merge: Literal[MERGES] = 'mean'
    # pcgrad (the SFSC paper's gradient projection) or none (the gradients merged as they are: the ablation)
    projection: Literal['pcgrad', 'none'] = 'pcgrad'
    # what one projection decides over: model (the SFSC paper's: the widths' whole shared gradients) or layer (each
    # shared parameter tensor on its own; measured no better on glyphs, docs/results.md)
    projection_granularity: Literal['model', 'layer'] = 'model'
    # in-place distillation: weight of KL(teacher's class posterior || each width's), scaled by kd_temperature squared
    lambda_kd: float = 0.0
    # the distillation's teacher: widest (the widest width's posterior, into the narrower widths) or ensemble (all
    # widths' mean posterior, into every width)
    kd_teacher: Literal['widest', 'ensemble'] = 'widest'
    kd_temperature: float = field(default=1.0, metadata=dict(positive=True))  # of that distillation (Hinton 2015)
    # weight of each narrower width's cosine regression onto the widest width's detached embedding (measured worse than
    # the posterior distillation on glyphs, docs/results.md)
    lambda_align: float = 0.0
    # weight of the cross-width triplet: a batch-hard triplet loss whose anchors are one width's embeddings and whose
    # positives and negatives are another width's (margin: triplet_margin); 0: none
    lambda_cross_tri: float = 0.0
    # its pairs: to_widest (each narrower width against the widest width's detached embeddings) or mutual (every
    # width against every other, both sides trained; it cost the full width on glyphs, docs/results.md)
    cross_tri_direction: Literal[CROSS_TRI_DIRECTIONS] = 'to_widest'

    @property
    def trains_uncertainty_loss(self) -> bool:
        """Whether some width is trained with the uncertainty loss (so ``kl_coef`` means something)."""
        return 'uncertainty' in (self.widest_loss, self.width_loss)

    def check(self) -> None:
        if self.kd_temperature != 1 and self.lambda_kd == 0:
            raise ConfigError(f'option kd_temperature={self.kd_temperature:g} has no effect: there is no distillation '
                              '(lambda_kd is 0); set lambda_kd > 0, or leave kd_temperature out.')
        if self.projection_granularity != 'model' and self.projection == 'none':
            raise ConfigError(f'option projection_granularity={self.projection_granularity!r} has no effect: '
                              'projection is none; set projection: pcgrad, or leave projection_granularity out.')
        _cross_triplet_check(self)


@dataclass(frozen=True)
class SupernetSumOptions(_Options):
    """Options of the supernet trained on its widths' summed losses (one backward, the plain optimizer)."""
    # the narrower widths' loss: cross_entropy (through the shared classifier: BCT-S), asymmetric (Budnik & Avrithis'
    # asymmetric metric learning against the widest width's detached embeddings: Asymmetric-S) or regression (mean
    # 1 - cos to those embeddings, no labels)
    student_loss: Literal['cross_entropy', 'asymmetric', 'regression'] = 'cross_entropy'
    # weight of the cross-width triplet (see the sfsc options); 0: none
    lambda_cross_tri: float = 0.0
    cross_tri_direction: Literal[CROSS_TRI_DIRECTIONS] = 'to_widest'  # its pairs: to_widest or mutual

    def check(self) -> None:
        _cross_triplet_check(self)


@dataclass(frozen=True)
class StagedOptions(_Options):
    """Options of the staged baselines: one model per width, the full one trained first, then the others against it."""
    # the narrower models' loss against the frozen full model: influence (BCT: own cross-entropy plus cross-entropy
    # through the full model's classifier), asymmetric (asymmetric metric learning against its embeddings) or
    # regression (mean 1 - cos to its embeddings, no labels)
    transfer_loss: Literal['influence', 'asymmetric', 'regression'] = 'influence'


@dataclass(frozen=True)
class IndependentOptions(_Options):
    """The independent models have no options of their own: one model per width, its own cross-entropy."""


OptionsT = TypeVar('OptionsT')


def options_fields(cls: type) -> List[str]:
    """The option names of an options class, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def options_dict(options: Any) -> Dict[str, Any]:
    """An options object as the plain mapping a recipe writes."""
    return dataclasses.asdict(options)


def build_options(cls: Type[OptionsT], values: Mapping[str, Any], where: str, base: Any = None) -> OptionsT:
    """An options object of `cls`: `base`'s values (or the class defaults) with `values` over them (a null value
    keeps `base`'s), checked.

    Raises:
        ConfigError: `values` is not a mapping, names an option `cls` does not have, or holds a value of the wrong
            type or out of range; or two options contradict each other.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f'{where} must be a mapping of option: value, got {type(values).__name__}.')
    names = options_fields(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        allowed = ', '.join(names) if names else 'none'
        raise ConfigError(f'{where}: unknown option(s) {", ".join(unknown)}; its options: {allowed}.')
    hints = typing.get_type_hints(cls)
    # null: the method's own value, as a recipe key left null is the default
    checked = {name: _coerce(f'{where}: option {name}', hints[name], value, _field(cls, name))
               for name, value in values.items() if value is not None}
    options = dataclasses.replace(base, **checked) if base is not None else cls(**checked)
    try:
        getattr(options, 'check', lambda: None)()  # an options class of a user's algorithm need not have one
    except ConfigError as err:
        raise ConfigError(f'{where}: {err}') from None
    return options


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _coerce(what: str, hint: Any, value: Any, f: dataclasses.Field) -> Any:
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f'{what}={value!r}; allowed: {", ".join(map(str, allowed))}.')
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{what} must be a number, got {value!r}.')
        value = float(value)
        positive = f.metadata.get('positive', False)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ConfigError(f'{what} must be a finite number {"> 0" if positive else ">= 0"}, got {value}.')
        return value
    raise TypeError(f'{what}: options of type {hint} are not supported.')  # a new field type needs its check here
