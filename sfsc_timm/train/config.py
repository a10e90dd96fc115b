""" Training configuration: one flat dataclass, YAML recipes and command-line overrides.

timm's train.py convention: the recipe (``-c recipes/NAME.yaml``) sets the argparse defaults and every ``--key value``
on the command line wins over it. Every recipe key is a field of :class:`TrainConfig`; an unknown key is an error that
lists the valid ones. The dataclass defaults are the built-in default recipe
(``recipes/sfsc_resnet18_fashion_mnist.yaml``).
"""
import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from .._resources import resolve_recipe
from ..atomic_io import write_text_atomically
from ..data.validation import VAL_SPLITS
from ..errors import CommandParser
from ..losses.cosine_classifier import CLASSIFIERS, DEFAULT_COSINE_SCALE
from ..losses.dirichlet import EVIDENCE_FUNCTIONS
from ..optim.combination import MERGES
from ..layers import check_widths
from .key_help import key_comments

__all__ = [
    'TrainConfig', 'ConfigError', 'LEGACY_KEY_VALUES', 'RUNTIME_KEYS', 'legacy_key_values',
    'DEFAULT_EXPERIMENT', 'load_recipe', 'build_parser', 'parse_args',
    'config_from_dict', 'config_differences', 'save_config', 'check_pretrained_file',
]

DEFAULT_EXPERIMENT = 'sfsc_resnet18_fashion_mnist'
SAMPLERS = ('random', 'pk')
PRIORITIES = ('uncertainty', 'relative', 'uniform')
WIDEST_LOSSES = ('cross_entropy', 'uncertainty')
PROJECTION_GRANULARITIES = ('model', 'layer')
AMP_DTYPES = ('float16', 'bfloat16')
# timm.scheduler.create_scheduler_v2's schedules that step on epochs / updates without a validation metric
SCHEDULES = ('cosine', 'tanh', 'step', 'multistep', 'poly', 'constant')
TRIPLET_FEATURES = ('embedding', 'pre_bn')
CROSS_TRI_DIRECTIONS = ('to_widest', 'mutual')
LAST_STRIDES = (1, 2)


class ConfigError(ValueError):
    """A recipe or command line that cannot be trained: unknown keys, wrong types, inconsistent values."""


@dataclass
class TrainConfig:
    """Every recipe key, with the built-in default recipe's values (Fashion-MNIST, about 10 minutes on 2 CPU cores)."""
    # --- model ---
    model: str = 'sfsc_resnet18'  # any registered sfsc_* model
    # start from pretrained weights: those of pretrained_file, else the model's registered ones (the classifier is
    # new whenever its classes differ)
    pretrained: bool = False
    pretrained_file: Optional[str] = None  # a local timm or SFSC checkpoint (file or folder); needs pretrained: true
    # stride of the backbone's last stage, 1 or 2 (ResNet family; 1 doubles the final map's height and width)
    last_stride: int = 2
    # the widths trained and switched between; must include 1.0 (the full width)
    widths: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    embed_dim: Optional[int] = 128  # D, shared by every width; null: the full backbone's pre-logits size
    input_size: List[int] = field(default_factory=lambda: [3, 32, 32])  # C, H, W
    crop_pct: float = 1.0  # eval transform: resize to size / crop_pct, then centre crop
    drop_path_rate: float = 0.0  # stochastic depth rate of the backbone
    # --- method (docs/open_set.md for sfsc_ce_ens, sfsc_ce, sfsc_exp and sfsc_ipd) ---
    # sfsc, sfsc_ce_ens, sfsc_ce, sfsc_exp, sfsc_ipd, sfsc_first_reading, sfsc_no_proj, sfsc_no_unc, bct_s,
    # asymmetric_s, independent, bct, asymmetric
    # the built-in default recipe keeps the method its published numbers were measured with (README, "The main job")
    method: str = 'sfsc_first_reading'
    # the widest width's loss in the evidential sfsc methods: cross_entropy (the public reference's) or uncertainty
    # (the uncertainty loss, as the narrower widths); null: the method's own (sfsc: cross_entropy; sfsc_first_reading,
    # sfsc_exp, sfsc_ipd: uncertainty)
    widest_loss: Optional[str] = None
    # width priorities of the sfsc methods: uncertainty (pi_w = m u_w / sum_j u_j, the first reading's), relative (the
    # same ratios, the widest width's weight held at 1, each at most m) or uniform (none: the reference's); null takes
    # the method's own (sfsc: uniform; sfsc_ce_ens: relative; the other sfsc methods: uncertainty)
    priority: Optional[str] = None
    # how the sfsc methods merge the widths' projected gradients of the parameters all widths share: mean (the public
    # reference's PCGrad) or sum (PCGrad's paper); private BatchNorm parameters keep their own gradient either way;
    # null: the method's own (sfsc, sfsc_no_proj, sfsc_no_unc: mean; the others: sum)
    gradient_merge: Optional[str] = None
    # what the sfsc methods' gradient projection decides over: model (the SFSC paper's: the widths' whole shared
    # gradients) or layer (each shared parameter tensor on its own); null: the method's own (model)
    projection_granularity: Optional[str] = None
    # the uncertainty loss's settings: null takes the method's own (sfsc: softplus evidence, a constant KL weight
    # 0.0005, the reference's; sfsc_first_reading: softplus, KL weight 1 reached after 10 epochs; sfsc_exp: exp
    # evidence, no KL term; sfsc_ipd: as sfsc_exp plus in-place distillation; sfsc_ce / sfsc_ce_ens: cross-entropy, exp
    # evidence for the priorities' uncertainty, lambda_kd 0.5)
    kl_coef: Optional[float] = None  # weight of the Dirichlet KL term of the uncertainty loss
    # the KL weight rises linearly to kl_coef over this many epochs; 0: kl_coef from the first step
    kl_anneal_epochs: Optional[float] = None
    evidence: Optional[str] = None  # how logits become Dirichlet evidence: softplus or exp
    # in-place distillation (sfsc_ipd): weight of each narrower width's regression onto the widest width's embedding
    lambda_align: Optional[float] = None
    # in-place distillation: weight of KL(teacher's class posterior || each width's): the widest width's into the
    # narrower ones (sfsc_ce), or all widths' mean into every width (sfsc_ce_ens)
    lambda_kd: Optional[float] = None
    # temperature of that distillation (Hinton et al. 2015; the loss is scaled by its square); null: the method's (1)
    kd_temperature: Optional[float] = None
    lambda_tri: float = 0.0  # weight of the batch-hard triplet loss (re-ID recipes)
    triplet_margin: float = 0.3  # margin of the batch-hard triplet loss
    # what the triplet loss compares: embedding (the neck's output, what retrieval ranks by) or pre_bn (the neck's
    # Linear output before its BatchNorm, BNNeck's split: the classifier sees the normalised one)
    triplet_feature: str = 'embedding'
    # the cross-width triplet (docs/open_set.md): weight of a batch-hard triplet loss whose anchors are one width's
    # embeddings and whose positives and negatives are another width's, margin triplet_margin (the supernet methods:
    # the sfsc family, bct_s); 0: none
    lambda_cross_tri: float = 0.0
    # its pairs: to_widest (each narrower width's anchors against the widest width's detached embeddings: only the
    # narrower widths learn from it) or mutual (anchors of every width against every other width, both sides trained)
    cross_tri_direction: str = 'to_widest'
    # how the shared classifier forms its logits in training: linear (W e + b, the SFSC paper's) or cosine
    # (classifier_scale x the cosine between the embedding and each class's weight row: the normalised softmax, Zhai &
    # Wu 2019; retrieval ranks by cosine). Every method; docs/open_set.md
    classifier: str = 'linear'
    classifier_scale: Optional[float] = None  # s of the cosine classifier; null: 20 (temperature 0.05)
    # epsilon of every classification loss: cross-entropy's target and the uncertainty loss's expected cross-entropy
    # target become (1 - epsilon) one-hot + epsilon / classes
    label_smoothing: float = 0.0
    # --- data ---
    # fashion_mnist (closed-set), fashion_mnist_open, glyphs (open-set), reid (Market-1501 folder), imagefolder,
    # or a Hub dataset id
    dataset: str = 'fashion_mnist'
    data_dir: Optional[str] = None  # fashion_mnist: IDX folder; glyphs: cache folder; reid, imagefolder: root
    max_train: Optional[int] = 8000  # class-balanced subset of what is left after validation; null: all
    # validation, carved from the training split (never the query / gallery): held-out identities (open-set),
    # held-out images of the training classes (closed-set), or auto (identities when >= 10 would be held out)
    val_split: str = 'auto'
    val_fraction: float = 0.1  # share of the training identities (or of every class's images) held out
    val_max_query: Optional[int] = 200  # per-epoch compatibility matrix on subsets of the validation query / gallery
    val_max_gallery: Optional[int] = 1000  # null: the whole validation gallery
    eval_max_query: Optional[int] = None  # final evaluation; null: the whole split
    eval_max_gallery: Optional[int] = None  # null: the whole gallery
    sampler: str = 'random'  # random (shuffled, DistributedSampler) or pk (P identities x K images)
    pk_p: int = 16  # sampler pk: identities per batch
    pk_k: int = 4  # sampler pk: images per identity
    batch_size: int = 64  # per process; with sampler pk it must equal pk_p * pk_k
    hflip: float = 0.5  # horizontal flip probability
    re_prob: float = 0.0  # random erasing probability
    scale: List[float] = field(default_factory=lambda: [0.64, 1.0])  # random resized crop area range
    workers: int = 0  # data loading processes per training process (0: in the main process)
    # --- optimisation (timm.optim.create_optimizer_v2, timm.scheduler.create_scheduler_v2) ---
    opt: str = 'sgd'  # any timm optimizer name (sgd, adamw, ...)
    lr: float = 0.1  # base learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    clip_grad: Optional[float] = None  # clip the gradient norm to this value; null: no clipping
    sched: str = 'cosine'  # any timm scheduler name (cosine, step, ...)
    epochs: int = 6  # training epochs (per stage for the staged baselines bct, asymmetric)
    warmup_epochs: int = 1  # linear warm-up from warmup_lr to lr over this many epochs
    warmup_lr: float = 0.01  # learning rate at the start of the warm-up
    min_lr: float = 1e-4  # learning rate at the end of the schedule
    sched_on_updates: bool = True  # step the schedule every update rather than every epoch
    amp: bool = False  # automatic mixed precision (autocast)
    amp_dtype: str = 'float16'  # float16 or bfloat16, with amp
    # --- run ---
    seed: int = 42  # seeds the weights, the data order and the augmentations
    device: str = 'auto'  # auto: cuda (local rank) when available, else cpu
    experiment: Optional[str] = None  # run folder name under output/; default: the recipe file's name
    output: Optional[str] = None  # run folder; default output/<experiment>
    eval_every: int = 1  # epochs between validation matrices (the last epoch is always evaluated)
    eval_batch_size: int = 256  # batch size of the validation and final evaluations
    max_nonfinite_steps: int = 5  # stop after this many consecutive skipped (non-finite loss) steps
    progress: bool = True  # show progress bars

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        """The run folder: ``output`` or ``output/<experiment>``."""
        return Path(self.output) if self.output else Path('output') / (self.experiment or DEFAULT_EXPERIMENT)


# keys added after runs were saved without them -> the value those runs trained with (a run saved before `sfsc`
# followed the public reference trained every sfsc method with these); see legacy_key_values
LEGACY_KEY_VALUES: Dict[str, Any] = dict(widest_loss='uncertainty', gradient_merge='sum')


def legacy_key_values(method: Optional[str]) -> Dict[str, Any]:
    """The values a run of `method` saved without the keys of :data:`LEGACY_KEY_VALUES` trained with: those, except
    ``widest_loss`` where the method trains every width with one loss (there the method's own value, which is what
    it always did)."""
    from .methods import METHODS  # late, as in validate
    values = dict(LEGACY_KEY_VALUES)
    step = METHODS.get(method)
    if step is not None and not step.trains_uncertainty_loss:
        values['widest_loss'] = step.defaults['widest_loss']
    return values

# keys that do not change the trained weights: they may differ between a run and its resumption
RUNTIME_KEYS = frozenset({
    'workers', 'device', 'experiment', 'output', 'eval_every', 'eval_batch_size', 'eval_max_query',
    'eval_max_gallery', 'val_max_query', 'val_max_gallery', 'max_nonfinite_steps', 'progress', 'epochs',
})

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(hint) -> Tuple[Any, bool]:
    """(inner type, optional) of a field annotation: Optional[int] -> (int, True)."""
    if typing.get_origin(hint) is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _coerce(name: str, value: Any) -> Any:
    """Check one value against its field type; ints are accepted for floats, lists for tuples."""
    hint, optional = _base_type(_HINTS[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f'recipe key {name!r} must not be null.')
    if typing.get_origin(hint) in (list, List):
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'recipe key {name!r} must be a list of {item.__name__}, got {value!r}.')
        return [_coerce_scalar(name, v, item) for v in value]
    return _coerce_scalar(name, value, hint)


def _coerce_scalar(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f'recipe key {name!r} must be {kind.__name__}, got {value!r} ({type(value).__name__}).')


def _check_keys(keys, where: str) -> None:
    unknown = sorted(set(keys) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f'unknown recipe key(s) in {where}: {", ".join(unknown)}. Valid keys: {", ".join(sorted(_FIELDS))}.')


def validate(cfg: TrainConfig) -> TrainConfig:
    """Type-check every field and the relations between them; returns `cfg`.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    from .methods import METHODS  # late: the methods import torch-heavy modules

    for name in _FIELDS:
        setattr(cfg, name, _coerce(name, getattr(cfg, name)))
    try:
        widths = check_widths(cfg.widths)
    except ValueError as err:
        raise ConfigError(f'recipe key widths={cfg.widths}: {err}') from None
    if len(widths) != len(cfg.widths):
        raise ConfigError(f'recipe key widths={cfg.widths} repeats a width; list each width once.')
    cfg.widths = list(widths)
    if cfg.method not in METHODS:
        raise ConfigError(f'unknown method {cfg.method!r}; available: {", ".join(sorted(METHODS))}.')
    method = METHODS[cfg.method]
    for name, value in method.defaults.items():  # null: the method's own setting
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    for key in ('lambda_align', 'lambda_kd'):
        if getattr(cfg, key) > 0 and not method.aligns_widths:
            aligning = _methods_where('aligns_widths')
            raise ConfigError(f'{key} applies to the method(s) {", ".join(aligning)}, not to {cfg.method}; set '
                              f'{key}: 0 or null, or choose one of those methods.')
    choices = dict(priority=PRIORITIES, projection_granularity=PROJECTION_GRANULARITIES, sampler=SAMPLERS,
                   amp_dtype=AMP_DTYPES, val_split=VAL_SPLITS, evidence=EVIDENCE_FUNCTIONS, sched=SCHEDULES,
                   triplet_feature=TRIPLET_FEATURES, last_stride=LAST_STRIDES, classifier=CLASSIFIERS,
                   cross_tri_direction=CROSS_TRI_DIRECTIONS, widest_loss=WIDEST_LOSSES, gradient_merge=MERGES)
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f'recipe key {name}={getattr(cfg, name)!r}; allowed: {", ".join(map(str, allowed))}.')
    _check_optimizer(cfg.opt)
    if len(cfg.input_size) != 3 or min(cfg.input_size) < 1:
        raise ConfigError(f'input_size must be [channels, height, width] of positive ints, got {cfg.input_size}.')
    if len(cfg.scale) != 2 or not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        raise ConfigError(f'scale must be [min, max] with 0 < min <= max <= 1, got {cfg.scale}.')
    positive = ('batch_size', 'epochs', 'pk_p', 'pk_k', 'eval_every', 'eval_batch_size', 'max_nonfinite_steps')
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f'recipe key {name} must be >= 1, got {getattr(cfg, name)}.')
    for name in ('max_train', 'val_max_query', 'val_max_gallery', 'eval_max_query', 'eval_max_gallery', 'embed_dim'):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f'recipe key {name} must be >= 1 or null (all), got {getattr(cfg, name)}.')
    for name in ('lr', 'kl_coef', 'lambda_tri', 'lambda_cross_tri', 'lambda_align', 'lambda_kd', 'weight_decay',
                 'warmup_lr', 'min_lr', 'momentum', 'hflip', 're_prob', 'label_smoothing', 'drop_path_rate', 'crop_pct',
                 'workers', 'warmup_epochs'):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f'recipe key {name} must be a finite number >= 0, got {value}.')
    if not (math.isfinite(cfg.kd_temperature) and cfg.kd_temperature > 0):
        raise ConfigError(f'recipe key kd_temperature must be a finite number > 0 (1: the posteriors as they are), '
                          f'got {cfg.kd_temperature}.')
    if cfg.kd_temperature != 1 and cfg.lambda_kd == 0:
        raise ConfigError(f'recipe key kd_temperature={cfg.kd_temperature:g} has no effect: there is no distillation '
                          f'(lambda_kd is 0 for {cfg.method}); set lambda_kd > 0 on sfsc_ce / sfsc_ce_ens, or '
                          'kd_temperature: null.')
    if cfg.classifier == 'cosine':
        if cfg.classifier_scale is None:
            cfg.classifier_scale = DEFAULT_COSINE_SCALE
        if not (math.isfinite(cfg.classifier_scale) and cfg.classifier_scale > 0):
            raise ConfigError(f'recipe key classifier_scale must be a finite number > 0 (the cosine logits\' scale; '
                              f'null: {DEFAULT_COSINE_SCALE:g}), got {cfg.classifier_scale}.')
    elif cfg.classifier_scale is not None:
        raise ConfigError(f'recipe key classifier_scale={cfg.classifier_scale:g} has no effect: it scales the cosine '
                          f'classifier, and classifier is {cfg.classifier!r}; set classifier: cosine, or '
                          'classifier_scale: null.')
    if cfg.lambda_cross_tri > 0 and not method.trains_cross_width_triplet:
        supporting = _methods_where('trains_cross_width_triplet')
        raise ConfigError(f'lambda_cross_tri applies to the supernet method(s) {", ".join(supporting)}, not to '
                          f'{cfg.method}; set lambda_cross_tri: 0, or choose one of those methods.')
    if cfg.cross_tri_direction != 'to_widest' and cfg.lambda_cross_tri == 0:
        raise ConfigError(f'recipe key cross_tri_direction={cfg.cross_tri_direction!r} has no effect: there is no '
                          'cross-width triplet (lambda_cross_tri is 0); set lambda_cross_tri > 0, or '
                          'cross_tri_direction: to_widest.')
    if cfg.widest_loss != method.defaults['widest_loss'] and not method.trains_uncertainty_loss:
        raise ConfigError(f'recipe key widest_loss={cfg.widest_loss!r} has no effect: {cfg.method} trains every width '
                          f'with the same loss; choose one of {", ".join(_methods_where("trains_uncertainty_loss"))}, '
                          'or set widest_loss: null.')
    if cfg.gradient_merge != method.defaults['gradient_merge'] and not method.merges_width_gradients:
        merging = _methods_where('merges_width_gradients')
        raise ConfigError(f'recipe key gradient_merge={cfg.gradient_merge!r} has no effect: {cfg.method} sums one loss '
                          f'over the widths; choose one of {", ".join(merging)}, or set gradient_merge: null.')
    if cfg.projection_granularity != 'model' and not method.projects_gradients:
        projecting = _methods_where('projects_gradients')
        raise ConfigError(f'recipe key projection_granularity={cfg.projection_granularity!r} has no effect: '
                          f'{cfg.method} does not project gradients; choose one of {", ".join(projecting)}, or set '
                          'projection_granularity: null.')
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError(f'recipe key val_fraction must be in (0, 1), got {cfg.val_fraction}.')
    if cfg.sampler == 'pk' and cfg.batch_size != cfg.pk_p * cfg.pk_k:
        raise ConfigError(f'sampler pk draws pk_p * pk_k = {cfg.pk_p * cfg.pk_k} images per batch but batch_size is '
                          f'{cfg.batch_size}; set batch_size to {cfg.pk_p * cfg.pk_k}.')
    if cfg.label_smoothing >= 1:
        raise ConfigError(f'recipe key label_smoothing must be below 1 (1 leaves no mass on the label), got '
                          f'{cfg.label_smoothing}.')
    if cfg.pretrained_file is not None and not cfg.pretrained:
        raise ConfigError(f'recipe key pretrained_file={cfg.pretrained_file!r} is read only with pretrained: true; set '
                          'pretrained: true (--pretrained) or pretrained_file: null.')
    if cfg.lambda_tri > 0 and cfg.sampler != 'pk':
        raise ConfigError('lambda_tri > 0 (triplet loss) needs positives in every batch: set sampler: pk.')
    if cfg.batch_size < 2:
        raise ConfigError('batch_size must be >= 2: BatchNorm needs more than one sample per batch.')
    return cfg


def _methods_where(flag: str) -> List[str]:
    """The registered methods whose step class sets the attribute `flag` (e.g. ``projects_gradients``), by name."""
    from .methods import METHODS  # late, as in validate
    return sorted(name for name, method in METHODS.items() if getattr(method, flag))


def check_pretrained_file(cfg: TrainConfig) -> None:
    """The weights a new run starts from can be found: run before the data is read, which may take long.

    Raises:
        ConfigError: ``pretrained_file`` names nothing, or ``pretrained: true`` without a file on a model that has no
            registered weights.
    """
    if not cfg.pretrained:
        return
    if cfg.pretrained_file is not None:
        if not Path(cfg.pretrained_file).exists():
            raise ConfigError(f'recipe key pretrained_file={cfg.pretrained_file!r}: no such file or folder; pass a '
                              'timm or SFSC checkpoint (model.safetensors or its folder) or set pretrained_file: '
                              'null.')
        return
    import timm  # late: keeps --help fast
    pretrained_cfg = timm.models.get_pretrained_cfg(cfg.model) if timm.is_model(cfg.model) else None
    if pretrained_cfg is not None and not (pretrained_cfg.hf_hub_id or pretrained_cfg.url or pretrained_cfg.file):
        raise ConfigError(f'recipe key pretrained: true, but {cfg.model} has no registered weights; set '
                          'pretrained_file to a checkpoint (e.g. a timm ImageNet model.safetensors) or pretrained: '
                          'false.')


def _check_optimizer(name: str) -> None:
    # timm.optim.create_optimizer_v2's names, optionally behind 'lookahead_'
    from timm.optim import list_optimizers
    parts = name.lower().split('_')
    if parts[-1] not in list_optimizers() or (len(parts) > 1 and parts[:-1] != ['lookahead']):
        raise ConfigError(f'recipe key opt={name!r} is not a timm optimizer; e.g. sgd, momentum, adamw, lamb (all: '
                          'python -c "import timm.optim; print(timm.optim.list_optimizers())").')


def config_from_dict(values: Dict[str, Any], where: str = 'config') -> TrainConfig:
    """A validated config from a (partial) dict of recipe keys."""
    _check_keys(values, where)
    return validate(TrainConfig(**values))


def load_recipe(path: Union[str, Path]) -> Dict[str, Any]:
    """The key/value pairs of a YAML recipe (a file, or a built-in recipe's name), keys checked.

    Raises:
        FileNotFoundError: no such recipe (the message lists the built-in recipes).
        ConfigError: not a mapping, or unknown keys.
    """
    path = resolve_recipe(path)
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
        problem = getattr(e, 'problem', None) or str(e).splitlines()[0]
        raise ConfigError(f'recipe {path} is not valid YAML{where}: {problem}. Fix the file (one key: value per '
                          'line).') from None
    except UnicodeDecodeError:
        raise ConfigError(f'recipe {path} is not a text file; pass a YAML recipe.') from None
    if not isinstance(values, dict):
        raise ConfigError(f'recipe {path} must be a YAML mapping of key: value, got {type(values).__name__}.')
    _check_keys(values, str(path))
    return values


def _parse_none(kind):
    def parse(text: str):
        return None if text.lower() in ('none', 'null') else kind(text)
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """``sfsc-timm train`` arguments: ``-c``, ``--resume``, ``--stop-after`` and one ``--key`` per recipe key."""
    parser = CommandParser(
        prog='sfsc-timm train', description='Train a switchable SFSC supernet (or a baseline) from a YAML recipe.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('-c', '--config', default=None,
                        help='YAML recipe, or the name of a built-in one (e.g. sfsc_resnet18_fashion_mnist); its keys '
                             'set the defaults below')
    parser.add_argument('--resume', default=None,
                        help='run folder or checkpoint folder to continue from (its epoch, optimizer, RNG states)')
    parser.add_argument('--stop-after', type=int, default=None,
                        help='stop after this many epochs of this invocation, as if killed (resume to continue)')
    group = parser.add_argument_group('recipe keys (override the recipe)')
    comments = key_comments(TrainConfig)  # the comments on the fields above
    for name, f in _FIELDS.items():
        hint, optional = _base_type(_HINTS[name])
        flags = [f'--{name.replace("_", "-")}'] + ([f'--{name}'] if '_' in name else [])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f'{comments.get(name, "")} (built-in default: {default})'.lstrip().replace('%', '%%')
        if hint is bool:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        elif typing.get_origin(hint) in (list, List):
            (item,) = typing.get_args(hint)
            group.add_argument(*flags, dest=name, type=item, nargs='+', default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(*flags, dest=name, type=_parse_none(hint) if optional else hint,
                               default=argparse.SUPPRESS, help=text)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[Dict[str, Any], argparse.Namespace]:
    """Recipe keys set by the recipe and the command line (command line wins), and the non-recipe arguments.

    Returns:
        (given keys, namespace with ``config``, ``resume``, ``stop_after``). Keys not given take the defaults later,
        so that a resume without ``-c`` can take the run's own recipe instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    given: Dict[str, Any] = {}
    if args.config:
        given.update(load_recipe(args.config))
        if given.get('experiment') is None:
            given['experiment'] = Path(args.config).stem
    given.update({k: v for k, v in vars(args).items() if k in _FIELDS})
    extra = argparse.Namespace(config=args.config, resume=args.resume, stop_after=args.stop_after)
    return given, extra


def config_differences(saved: Dict[str, Any], current: Dict[str, Any],
                       ignore=RUNTIME_KEYS) -> List[Tuple[str, Any, Any]]:
    """Keys (outside `ignore`) whose values differ: ``(key, saved value, current value)``."""
    keys = sorted((set(saved) | set(current)) - set(ignore))
    return [(k, saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)]


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    write_text_atomically(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
