""" torch.distributed helpers for the trainer (torchrun: gloo on CPU, nccl on GPU).

How a distributed run works (``torchrun --nproc_per_node N -m sfsc_timm.train -c RECIPE``):

* every rank builds the same model (same seed) and draws its own augmentations (seed + rank);
* the training set is split between ranks (``DistributedSampler`` or ``PKSampler`` with rank / world size), so
  ``batch_size`` is per process;
* SFSC / GradientProjection all-reduces each width's gradient (mean) *before* projecting, and the steps all-reduce
  the per-width mean uncertainties before computing priorities (both are nonlinear), and whether any rank saw a
  non-finite loss (all ranks skip together); plain-optimizer steps all-reduce the summed gradient;
* BatchNorm normalises with per-rank batch statistics (as DDP without SyncBatchNorm); running statistics are averaged
  over ranks before each evaluation and checkpoint (timm's ``distribute_bn``);
* only rank 0 evaluates and writes (config, metrics, checkpoints, export); the others wait at a barrier. Each rank's
  RNG states are gathered into rank 0's checkpoint, so a resumed distributed run continues every rank's stream.
"""
import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so

from ..errors import UsageError

__all__ = ['DistInfo', 'setup_distributed', 'is_distributed', 'all_reduce_mean_', 'all_reduce_grads', 'any_rank',
           'barrier', 'gather_objects', 'broadcast_object', 'cleanup_distributed']


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: rank, world size and its device."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = 'auto') -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (env vars), pick the device; single process otherwise.

    Args:
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' (the index is replaced by the
            local rank under torchrun).
    """
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device != 'cpu' and not device.startswith('cuda'):
        raise UsageError(f'device {device!r} is not one of auto, cpu, cuda, cuda:N.')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise UsageError(f'device {device!r} was asked for but CUDA is not available here; use --device cpu.')
    if dist.is_available() and dist.is_initialized():  # already set up (tests, notebooks)
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
        if device.startswith('cuda') and ':' not in device:
            device = f'cuda:{local_rank}'
        return DistInfo(rank, local_rank, world_size, torch.device(device))
    # gloo is the right backend for CPU tensors even when torchrun sets up a CUDA machine
    backend = None if device.startswith('cuda') else 'gloo'
    info = init_distributed_device_so(device=device, dist_backend=backend)
    return DistInfo(info['global_rank'], info['local_rank'], info['world_size'], torch.device(info['device']))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks (no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor)
        tensor.div_(dist.get_world_size())
    return tensor


@torch.no_grad()
def all_reduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Average the ``.grad`` of `params` over ranks with one collective (params without a grad are skipped)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean_(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on any rank."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    out: List[Optional[Any]] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
