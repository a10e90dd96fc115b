""" Training configuration: one dataclass of recipe keys plus the method's typed options, YAML recipes and
command-line overrides.

timm's train.py convention: the recipe (``-c recipes/NAME.yaml``) sets the argparse defaults and every ``--key value``
on the command line wins over it. Every recipe key is a field of :class:`TrainConfig`; an unknown key is an error that
lists the valid ones. The method's options (train/options.py) go under the method's name::

    method: sfsc_ce_ens
    sfsc_ce_ens: {lambda_kd: 0.3}

and on the command line as ``--lambda-kd 0.3``; an option the chosen method does not have is refused. A block of
another method is checked and otherwise ignored, so ``--method bct`` on a recipe of ``sfsc_ce_ens`` trains bct with
the recipe's data and schedule. The dataclass defaults are the main job's (Fashion-MNIST); a recipe lists what it
changes.
"""
import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .._resources import resolve_recipe
from ..atomic_io import write_text_atomically
from ..data.validation import VAL_SPLITS
from ..errors import CommandParser
from ..losses.cosine_classifier import CLASSIFIERS, DEFAULT_COSINE_SCALE
from ..layers import check_widths
from .config_error import ConfigError
from .key_help import key_comments
from .legacy import LEGACY_METHODS, upgrade_saved_recipe
from .options import build_options, options_dict, options_fields

__all__ = [
    'TrainConfig', 'ConfigError', 'RUNTIME_KEYS', 'DEFAULT_EXPERIMENT', 'load_recipe', 'build_parser', 'parse_args',
    'config_from_dict', 'config_differences', 'save_config', 'check_pretrained_file', 'upgrade_saved_recipe',
]

DEFAULT_EXPERIMENT = 'sfsc_resnet18_fashion_mnist'
SAMPLERS = ('random', 'pk')
AMP_DTYPES = ('float16', 'bfloat16')
# timm.scheduler.create_scheduler_v2's schedules that step on epochs / updates without a validation metric
SCHEDULES = ('cosine', 'tanh', 'step', 'multistep', 'poly', 'constant')
TRIPLET_FEATURES = ('embedding', 'pre_bn')
LAST_STRIDES = (1, 2)


@dataclass
class TrainConfig:
    """Every recipe key, with the main job's values (Fashion-MNIST), and the method's resolved options."""
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
    # --- method ---
    # the training method (train/methods.py): sfsc (the public reference's), sfsc_ce_ens (ours, for many
    # identities), bct_s, asymmetric_s, independent, bct, asymmetric. Its options go under its name (the keys of
    # "method options" below); an option of another method is refused
    method: str = 'sfsc'
    lambda_tri: float = 0.0  # weight of the batch-hard triplet loss (re-ID recipes)
    triplet_margin: float = 0.3  # margin of the batch-hard triplet loss
    # what the triplet loss compares: embedding (the neck's output, what retrieval ranks by) or pre_bn (the neck's
    # Linear output before its BatchNorm, BNNeck's split: the classifier sees the normalised one)
    triplet_feature: str = 'embedding'
    # how the shared classifier forms its logits in training: linear (W e + b, the SFSC paper's) or cosine
    # (classifier_scale x the cosine between the embedding and each class's weight row: the normalised softmax, Zhai &
    # Wu 2019; retrieval ranks by cosine; measured no better on glyphs, docs/results.md). Every method
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
    # not a recipe key: the method's options object (its recipe block), filled by config_from_dict
    options: Any = field(default=None, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        """The recipe this config is: every key, and the method's options under its name, right after ``method``."""
        values = {}
        for f in dataclasses.fields(self):
            if f.name == 'options':
                continue
            values[f.name] = _plain(getattr(self, f.name))
            if f.name == 'method':
                values[self.method] = options_dict(self.options) if self.options is not None else {}
        return values

    @property
    def run_dir(self) -> Path:
        """The run folder: ``output`` or ``output/<experiment>``."""
        return Path(self.output) if self.output else Path('output') / (self.experiment or DEFAULT_EXPERIMENT)


# keys that do not change the trained weights: they may differ between a run and its resumption
RUNTIME_KEYS = frozenset({
    'workers', 'device', 'experiment', 'output', 'eval_every', 'eval_batch_size', 'eval_max_query',
    'eval_max_gallery', 'val_max_query', 'val_max_gallery', 'max_nonfinite_steps', 'progress', 'epochs',
})

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != 'options'}
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
            f'unknown recipe key(s) in {where}: {", ".join(unknown)}. Valid keys: {", ".join(sorted(_FIELDS))}, and '
            'the method\'s options under its name.')


def validate(cfg: TrainConfig) -> TrainConfig:
    """Type-check every field and the relations between them; returns `cfg`.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed (the method and its options are checked by
            config_from_dict, which builds the options).
    """
    for name in _FIELDS:
        setattr(cfg, name, _coerce(name, getattr(cfg, name)))
    try:
        widths = check_widths(cfg.widths)
    except ValueError as err:
        raise ConfigError(f'recipe key widths={cfg.widths}: {err}') from None
    if len(widths) != len(cfg.widths):
        raise ConfigError(f'recipe key widths={cfg.widths} repeats a width; list each width once.')
    cfg.widths = list(widths)
    choices = dict(sampler=SAMPLERS, amp_dtype=AMP_DTYPES, val_split=VAL_SPLITS, sched=SCHEDULES,
                   triplet_feature=TRIPLET_FEATURES, last_stride=LAST_STRIDES, classifier=CLASSIFIERS)
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
    for name in ('lr', 'lambda_tri', 'weight_decay', 'warmup_lr', 'min_lr', 'momentum', 'hflip', 're_prob',
                 'label_smoothing', 'drop_path_rate', 'crop_pct', 'workers', 'warmup_epochs'):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f'recipe key {name} must be a finite number >= 0, got {value}.')
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


def config_from_dict(values: Mapping[str, Any], where: str = 'config') -> TrainConfig:
    """A validated config from a (partial) mapping of recipe keys.

    The method's options come from its block (``values[method]``) with any option given as a top-level key (the
    command line's ``--lambda-kd``) over it; blocks of other methods are checked and otherwise ignored.

    Raises:
        ConfigError: an unknown key or method, an option the method does not have, a bad value.
    """
    from .methods import METHODS  # late: the methods import torch-heavy modules

    values = dict(values)
    name = values.get('method', _FIELDS['method'].default)
    if name not in METHODS:
        hint = (f' {name} is a preset of the published tables now: `python benchmarks/experiments/train.py` takes it, '
                f'or write method {LEGACY_METHODS[name][0]} with its options '
                '(docs/design.md, "Methods and their options").' if name in LEGACY_METHODS else '')
        raise ConfigError(f'unknown method {name!r} in {where}; available: {", ".join(METHODS)}.{hint}')
    options_anywhere = set(option_names())
    blocks = {key: values.pop(key) for key in list(values) if key in METHODS}
    given = {key: values.pop(key) for key in list(values) if key in options_anywhere and key not in _FIELDS}
    _check_keys(values, where)
    for other, block in blocks.items():
        if other != name:  # a typo in another method's block is named now, not when that method is chosen
            build_options(METHODS[other].options_class, block or {}, where=f'{where}: {other}')
    own = blocks.get(name) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f'{where}: {name} must be a mapping of option: value, got {type(own).__name__}.')
    method = METHODS[name]
    for key in given:
        if key not in options_fields(method.options_class):
            having = [m for m, entry in METHODS.items() if key in options_fields(entry.options_class)]
            raise ConfigError(f'{key} is not an option of method {name} (its options: '
                              f'{", ".join(options_fields(method.options_class)) or "none"}); it is one of '
                              f'{", ".join(having)}. Leave it out, or choose one of those methods.')
    options = build_options(method.options_class, {**own, **given}, where=f'method {name}', base=method.options)
    return validate(TrainConfig(**values, options=options))


def option_names() -> List[str]:
    """Every option of every registered method, each once (the command line's flags for them)."""
    from .methods import METHODS  # late, as in config_from_dict
    names: Dict[str, None] = {}
    for method in METHODS.values():
        names.update(dict.fromkeys(options_fields(method.options_class)))
    return list(names)


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
    from .methods import METHODS  # late, as in config_from_dict
    method = values.get('method', _FIELDS['method'].default)
    options_anywhere = set(option_names())
    for key in values:
        if key in options_anywhere and key not in _FIELDS:
            raise ConfigError(f'recipe {path}: {key} is an option of the method; write it under the method\'s name '
                              f'({method}:\n  {key}: {values[key]}).')
    _check_keys([key for key in values if key not in METHODS], str(path))
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
    _add_option_arguments(parser)
    return parser


def _add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per method option, grouped by the algorithm whose options class holds it."""
    from .methods import METHODS  # late, as in config_from_dict
    by_class: Dict[type, List[str]] = {}
    for name, method in METHODS.items():
        by_class.setdefault(method.options_class, []).append(name)
    added = set(_FIELDS)
    for cls, names in by_class.items():
        fields = [f for f in dataclasses.fields(cls) if f.name not in added]
        if not fields:
            continue
        group = parser.add_argument_group(f'method options of {", ".join(names)} (in a recipe: under the method\'s '
                                          'name)')
        comments, hints = key_comments(cls), typing.get_type_hints(cls)
        for f in fields:
            added.add(f.name)
            values = '; '.join(f'{name}: {getattr(METHODS[name].options, f.name)}' for name in names)
            text = f'{comments.get(f.name, "")} ({values})'.lstrip().replace('%', '%%')
            flags = [f'--{f.name.replace("_", "-")}'] + ([f'--{f.name}'] if '_' in f.name else [])
            hint = hints[f.name]
            if typing.get_origin(hint) is typing.Literal:
                group.add_argument(*flags, dest=f.name, choices=typing.get_args(hint), default=argparse.SUPPRESS,
                                   help=text)
            else:
                group.add_argument(*flags, dest=f.name, type=hint, default=argparse.SUPPRESS, help=text)


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
    options = set(option_names())
    given.update({k: v for k, v in vars(args).items() if k in _FIELDS or k in options})
    extra = argparse.Namespace(config=args.config, resume=args.resume, stop_after=args.stop_after)
    return given, extra


def config_differences(saved: Dict[str, Any], current: Dict[str, Any],
                       ignore=RUNTIME_KEYS) -> List[Tuple[str, Any, Any]]:
    """Keys (outside `ignore`) whose values differ: ``(key, saved value, current value)``; a method's options are
    compared one by one, as ``METHOD.OPTION``, when both name the same method (else ``method`` alone differs)."""
    if saved.get('method') != current.get('method'):
        saved = {k: v for k, v in saved.items() if k != saved.get('method')}
        current = {k: v for k, v in current.items() if k != current.get('method')}
    saved, current = _flat(saved), _flat(current)
    keys = sorted((set(saved) | set(current)) - set(ignore))
    return [(k, saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)]


def _flat(values: Mapping[str, Any]) -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update({f'{key}.{option}': v for option, v in value.items()})
        else:
            flat[key] = value
    return flat


def _plain(value: Any) -> Any:
    """A field value as YAML and JSON write it (dataclasses.asdict's deep copy, for the lists)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    write_text_atomically(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
