"""The entry every registered ``sfsc_*`` model goes through: supernet or static width, random or pretrained."""
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

from torch import nn
from timm.models import resolve_pretrained_cfg
from timm.models._features import FeatureGetterNet
from timm.models._builder import pretrained_cfg_for_features

from ..layers import DEFAULT_WIDTHS, check_width, check_widths, static_state_map
from .checkpoint import CheckpointError, CheckpointReader, describe_shapes, resolve_weights_file, widths_in_keys
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet
from .extract import build_static, extract

_logger = logging.getLogger(__name__)


def create_sfsc_model(
        variant: str,
        backbone_name: str,
        pretrained: bool = False,
        *,
        width: Optional[float] = None,
        widths: Sequence[float] = DEFAULT_WIDTHS,
        embed_dim: Optional[int] = None,
        num_classes: Optional[int] = None,
        in_chans: int = 3,
        features_only: bool = False,
        out_indices: Any = (0, 1, 2, 3, 4),
        pretrained_cfg: Optional[Dict[str, Any]] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[str] = None,
        pretrained_model_args: Optional[Dict[str, Any]] = None,
        **backbone_kwargs,
) -> nn.Module:
    """Build an SFSC model the way ``timm.create_model`` users expect.

    Args:
        variant: registered name (``'sfsc_resnet50'``).
        backbone_name: timm backbone family (``'resnet50'``).
        pretrained: load weights from the location in the pretrained_cfg (``local-dir:``, ``hf-hub:``, ``file=``).
        width: None for the switchable supernet; a float for the standalone static sub-model at that width.
        widths: the supernet's widths (a checkpoint's config.json supplies them when loading).
        embed_dim: D, the embedding size shared by all widths; default the full backbone's ``num_features``.
        num_classes: classes of the shared classifier (0: ``forward`` returns embeddings).
        in_chans: image channels.
        features_only: a static sub-model's backbone feature maps, as timm's ``features_only`` (needs ``width``).
        out_indices: feature levels for ``features_only``.
        **backbone_kwargs: passed to the timm backbone (``drop_rate``, ``drop_path_rate``, ...).
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay).to_dict()
    widths = check_widths(widths)
    if width is not None:
        width = check_width(width, widths, owner=variant)
    if features_only and width is None:
        raise ValueError('features_only=True needs a static sub-model: pass width=, e.g. '
                         f"timm.create_model('{variant}', width=0.5, features_only=True).")
    num_classes = (cfg.get('num_classes') or 0) if num_classes is None else num_classes
    build = dict(widths=widths, embed_dim=embed_dim, num_classes=num_classes, in_chans=in_chans, **backbone_kwargs)
    if pretrained:
        source_width = (pretrained_model_args or {}).get('width')
        weights = resolve_weights_file(cfg, cache_dir)
        model = _load(variant, backbone_name, build, weights, width, source_width)
    else:
        net = SwitchableEmbeddingNet(backbone_name, **build)
        model = net if width is None else extract(net, width)
    model.pretrained_cfg = model.default_cfg = cfg
    if features_only:
        features = FeatureGetterNet(model.backbone, out_indices=out_indices)
        features.pretrained_cfg = features.default_cfg = pretrained_cfg_for_features(cfg)
        return features
    return model


def _load(variant: str, backbone_name: str, build: Dict[str, Any], weights, width: Optional[float],
          source_width: Optional[float]) -> EmbeddingNet:
    net = SwitchableEmbeddingNet(backbone_name, device='meta', **build)
    with CheckpointReader(weights) as reader:
        if source_width is not None:  # the checkpoint is one static sub-model
            if width != source_width:
                raise CheckpointError(
                    f'{weights} holds only the static sub-model at width {source_width}; pass width={source_width}, '
                    'or load the supernet checkpoint it was extracted from to get other widths.')
            meta_state = net.state_dict()
            skeleton = build_static(net, source_width, lambda key, index: meta_state[key][index] if index
                                    else meta_state[key])  # meta tensors: shapes only
            return _load_whole(variant, skeleton, reader, needed_widths=())
        if width is None:
            return _load_whole(variant, net, reader, needed_widths=net.widths)
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        expected = {source: shapes[source] for source, _ in static_state_map(net, width).values()}
        head_ok = _check(variant, reader, expected, needed_widths=(width,), exact=False, model=net)
        head = None if head_ok else _fresh_head(net)
        return build_static(net, width, reader.read, head=head)


def _load_whole(variant: str, model: nn.Module, reader: CheckpointReader, needed_widths) -> nn.Module:
    """Load every tensor of ``model`` (a meta skeleton) from the checkpoint, same keys, same shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head_ok = _check(variant, reader, expected, needed_widths=needed_widths, exact=True, model=model)
    if not head_ok:
        model.head = _fresh_head(model)
    state = {k: reader.read(k) for k in expected if head_ok or not k.startswith('head.')}
    model.load_state_dict(state, strict=head_ok, assign=True)
    leftover = [k for k, v in model.state_dict().items() if v.is_meta]
    if leftover:
        raise CheckpointError(f'{reader.path} left {leftover[:3]} unset.')
    return model


def _fresh_head(net: nn.Module) -> nn.Module:
    if net.num_classes <= 0:
        return nn.Identity()
    head = nn.Linear(net.embed_dim, net.num_classes)
    nn.init.normal_(head.weight, std=0.001)
    nn.init.zeros_(head.bias)
    return head


def _check(variant: str, reader: CheckpointReader, expected: Dict[str, Tuple[int, ...]], needed_widths,
           exact: bool, model: nn.Module) -> bool:
    """Raise a CheckpointError naming what does not fit; return whether the classifier can be loaded."""
    keys = set(reader.keys())
    body = {k: s for k, s in expected.items() if not k.startswith('head.')}
    missing = [k for k in body if k not in keys]
    available = widths_in_keys(keys)
    if missing:
        lacking = [w for w in needed_widths if w not in available]
        if lacking and all('.per_width.' in k for k in missing):
            raise CheckpointError(
                f'{reader.path} has BatchNorm statistics for widths {available} only; {tuple(lacking)} '
                f'{"is" if len(lacking) == 1 else "are"} not available. Choose one of {available}'
                + (f', or build the supernet with widths={available}.' if exact else '.'))
        raise CheckpointError(
            f'{reader.path} does not fit {variant}: {len(missing)} missing tensors (e.g. {missing[:3]}). It was saved '
            'from another architecture; load it with the architecture named in its config.json.')
    if exact:
        unexpected = sorted(k for k in keys - set(expected) if not k.startswith('head.'))
        if unexpected:
            model_widths = tuple(getattr(model, 'widths', ()))
            if model_widths and available != model_widths and all('.per_width.' in k for k in unexpected):
                raise CheckpointError(
                    f'{reader.path} was trained at widths {available}, but the model was built with widths '
                    f'{model_widths}. Pass widths={available} (a config.json saved with the checkpoint does this).')
            raise CheckpointError(
                f'{reader.path} does not fit {variant}: {len(unexpected)} unexpected tensors (e.g. {unexpected[:3]}). '
                'It was saved from another architecture; load it with the architecture named in its config.json.')
    model_state = model.state_dict()
    for k in body:  # an altered header can keep the sizes and change the kind of number
        if k in model_state and reader.dtype(k).is_floating_point != model_state[k].is_floating_point():
            raise CheckpointError(
                f'{reader.path}: tensor {k} is stored as {reader.dtype(k)}, the model needs {model_state[k].dtype}; '
                'the file is corrupt or was not written by sfsc_timm.save. Save or download it again.')
    wrong = [(k, reader.shape(k), s) for k, s in body.items() if reader.shape(k) != s]
    if wrong:
        if 'neck.fc.weight' in keys and reader.shape('neck.fc.weight')[0] != model.embed_dim:
            raise CheckpointError(
                f'{reader.path} embeds into D={reader.shape("neck.fc.weight")[0]} dimensions, but the model was built '
                f'with embed_dim={model.embed_dim}. Pass embed_dim={reader.shape("neck.fc.weight")[0]}.')
        raise CheckpointError(
            f'{reader.path} does not fit {variant}: tensor shapes differ ({describe_shapes(wrong)}). It was saved from '
            'another architecture or configuration; load it with the config.json saved beside it.')
    head = {k: s for k, s in expected.items() if k.startswith('head.')}
    head_ok = all(k in keys and reader.shape(k) == s for k, s in head.items())
    if head and not head_ok:
        _logger.warning('%s: classifier in %s does not have %d classes; a new classifier is initialised.',
                        variant, reader.path, model.num_classes)
    return head_ok
