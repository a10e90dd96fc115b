"""Loading SFSC checkpoints: the supernet or one width, read slice by slice, checked, input channels adapted."""
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from timm.models import adapt_input_conv
from torch import nn

from ..layers import static_state_map
from .checkpoint import CheckpointError, CheckpointReader, describe_shapes, widths_in_keys
from .embedding_net import EmbeddingNet, SwitchableEmbeddingNet
from .extract import build_static
from .heads import create_head

_logger = logging.getLogger(__name__)


class _InputChannelAdapter:
    """A :class:`CheckpointReader` view whose first-conv weights have ``in_chans`` input channels.

    timm adapts a pretrained first conv to another ``in_chans`` with ``adapt_input_conv``; so does this view, on the
    rows a width reads (the first conv's input channels are never sliced by any width).
    """

    def __init__(self, reader: CheckpointReader, first_conv_weights: Sequence[str], in_chans: int):
        self.reader = reader
        self.path = reader.path
        self.in_chans = in_chans
        self.adapted = {k for k in first_conv_weights if k in reader.keys() and len(reader.shape(k)) == 4
                        and reader.shape(k)[1] != in_chans}

    def keys(self) -> Tuple[str, ...]:
        return self.reader.keys()

    def shape(self, key: str) -> Tuple[int, ...]:
        shape = self.reader.shape(key)
        return (shape[0], self.in_chans, *shape[2:]) if key in self.adapted else shape

    def dtype(self, key: str) -> torch.dtype:
        return self.reader.dtype(key)

    def read(self, key: str, index: Tuple[slice, ...] = ()) -> torch.Tensor:
        if key not in self.adapted:
            return self.reader.read(key, index)
        weight = self.reader.read(key, index[:1])  # the rows of this width, every stored input channel
        try:
            weight = adapt_input_conv(self.in_chans, weight)
        except (NotImplementedError, ValueError, AssertionError) as e:
            raise CheckpointError(f'{self.path}: cannot adapt {key} ({self.reader.shape(key)[1]} input channels) to '
                                  f'in_chans={self.in_chans} ({e}); load it with its own in_chans.') from None
        return weight[index] if index else weight


def load_sfsc_checkpoint(variant: str, backbone_name: str, build: Dict[str, Any], weights: Union[str, Path],
                         width: Optional[float], source_width: Optional[float],
                         first_conv: Sequence[str] = ()) -> EmbeddingNet:
    """The supernet (``width=None``) or the static sub-model at ``width``, with its tensors read from ``weights``.

    Args:
        variant: registered name, for messages.
        backbone_name: timm backbone family.
        build: ``SwitchableEmbeddingNet`` arguments (widths, embed_dim, num_classes, in_chans, backbone options).
        weights: an SFSC safetensors checkpoint: a supernet, or a static sub-model at ``source_width``.
        width: None for the supernet, else the static width to build.
        source_width: the width of a static sub-model checkpoint, None for a supernet checkpoint.
        first_conv: names of the layers that read the image; their weights are adapted to ``in_chans`` as timm's
            pretrained loader does (summed for one channel, repeated and rescaled for more than three).

    Raises:
        CheckpointError: a checkpoint that does not fit, naming the problem and the fix.
    """
    net = SwitchableEmbeddingNet(backbone_name, device='meta', **build)
    with CheckpointReader(weights) as file:
        reader = _InputChannelAdapter(file, [f'{name}.weight' for name in first_conv], net.in_chans)
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


def _load_whole(variant: str, model: nn.Module, reader: '_InputChannelAdapter', needed_widths) -> nn.Module:
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
    return create_head(net.embed_dim, net.num_classes)


def _check(variant: str, reader: '_InputChannelAdapter', expected: Dict[str, Tuple[int, ...]], needed_widths,
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
