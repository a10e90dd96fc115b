"""Which embeddings may be compared: the checkpoint identity ``sfsc-timm embed`` records, and the check that
refuses queries from another checkpoint while accepting any width of the index's own (docs/gallery_index.md).

The identity is a SHA-256 over the weights that every width of a supernet shares: the leading 8 x 8 block (over
the first two dimensions) of every weight tensor with two or more dimensions (convolutions, linear layers). The
channel rule keeps at least 8 channels of every sliced dimension at every width (``make_divisible(c * w, 8)``), so
these blocks are the same tensors in the supernet, in each static sub-model extracted from it and in each width
loaded from its checkpoint; BatchNorm (private to each width) and the classifier (not part of the embedding) are
left out. It costs a few kilobytes of hashing, whatever the model's size.
"""
import hashlib
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..errors import UsageError
from ..layers.channels import CHANNEL_DIVISOR

__all__ = ['CHECKPOINT_ID_KEY', 'checkpoint_identity', 'describe_source', 'check_same_checkpoint',
           'IncompatibleEmbeddings']

CHECKPOINT_ID_KEY = 'checkpoint_id'
_SHOWN_DIGITS = 12  # of the identity, in messages


class IncompatibleEmbeddings(UsageError):
    """Two sets of embeddings that cannot be searched against each other (another checkpoint or size)."""


def checkpoint_identity(net: nn.Module) -> str:
    """``'sha256:<hex>'`` over the weight blocks every width of the checkpoint shares (module docstring)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if tensor.dim() < 2 or not tensor.is_floating_point():
            continue
        block = tensor[:CHANNEL_DIVISOR, :CHANNEL_DIVISOR].detach().to('cpu', torch.float32).contiguous()
        digest.update(f'{name}:{tuple(block.shape)}:'.encode())
        digest.update(block.numpy().tobytes())
    return f'sha256:{digest.hexdigest()}'


def describe_source(metadata: Mapping[str, Any]) -> str:
    """``'sfsc_resnet18 (checkpoint 1a2b3c4d5e6f, width 0.25)'``, from embed's metadata (or an index's)."""
    identity = metadata.get(CHECKPOINT_ID_KEY)
    shown = identity.split(':', 1)[-1][:_SHOWN_DIGITS] if identity else 'not recorded'
    widths = metadata.get('widths') or ([metadata['width']] if metadata.get('width') is not None else [])
    width = f', width {"/".join(f"{float(w):g}" for w in widths)}' if widths else ''
    return f'{metadata.get("model") or metadata.get("architecture") or "an unknown model"} (checkpoint {shown}{width})'


def check_same_checkpoint(query: Mapping[str, Any], query_name: str, index: Mapping[str, Any], index_name: str,
                          allow_other_checkpoint: bool = False) -> Optional[str]:
    """Refuse embeddings that cannot be searched in the index; accept any width of the index's checkpoint.

    Args:
        query: metadata of the embeddings to search with (or to add).
        query_name: what they are, for the message (``'queries q.parquet'``).
        index: the index's metadata; index_name: what it is (``'the index gallery_index'``).
        allow_other_checkpoint: accept another (or an unrecorded) checkpoint of the same embedding size, for models
            trained to be compatible with separate weights (e.g. BCT's).

    Returns:
        None when the checkpoint is the index's; a one-line note of what was accepted under
        ``allow_other_checkpoint``.

    Raises:
        IncompatibleEmbeddings: another embedding size (always), another checkpoint or one not recorded (unless
            allowed), naming both sides.
    """
    if int(query['embed_dim']) != int(index['embed_dim']):
        raise IncompatibleEmbeddings(
            f'{query_name} embed into D={query["embed_dim"]} ({describe_source(query)}), but {index_name} holds '
            f'D={index["embed_dim"]} embeddings ({describe_source(index)}): embed them with the index\'s checkpoint, '
            'at any of its widths.')
    query_id, index_id = query.get(CHECKPOINT_ID_KEY), index.get(CHECKPOINT_ID_KEY)
    if query_id and query_id == index_id:
        return None
    if query_id and index_id:
        problem = (f'{query_name} come from {describe_source(query)}, {index_name} from {describe_source(index)}: '
                   'embeddings of another checkpoint are not comparable')
    else:
        lacking = query_name if not query_id else index_name
        problem = (f'{lacking} records no checkpoint identity (written by an older sfsc-timm embed), so whether '
                   f'{query_name} ({describe_source(query)}) come from the checkpoint of {index_name} '
                   f'({describe_source(index)}) cannot be checked')
    if allow_other_checkpoint:
        return f'{problem}; accepted anyway (--allow-other-checkpoint).'
    raise IncompatibleEmbeddings(
        f'{problem}. Embed them with the index\'s checkpoint (any of its widths) using this version of sfsc-timm '
        'embed, or pass --allow-other-checkpoint (allow_other_checkpoint=True) if the two were trained to be '
        'compatible.')
