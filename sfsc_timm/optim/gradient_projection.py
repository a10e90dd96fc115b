""" Optimizer wrapper that projects conflicting per-task gradients of shared parameters before stepping. """
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch.optim import Optimizer
from timm.utils.clip_grad import dispatch_clip_grad

from .projection import project_conflicting

__all__ = ['GradientProjection']

_STATE_KEY = 'gradient_projection'
_MODES = ('pcgrad', 'sum')


class GradientProjection(Optimizer):
    """Wraps any torch optimizer; combines one gradient per task (width) of the shared parameters by PCGrad.

    Usage, one step::

        opt = GradientProjection(torch.optim.SGD(net.parameters(), lr=0.1), shared_params, num_tasks=len(widths))
        opt.zero_grad()
        for i, loss in enumerate(losses):      # one backward per task, no retain_graph needed
            loss.backward()
            opt.collect(i)                     # moves the shared grads into row i of an (m, P) buffer
        opt.step()                             # project + sum -> shared .grad, then the inner optimizer steps

    `shared_params` are the parameters every task updates; the others (e.g. a width's private BatchNorm) keep the
    `.grad` they accumulate over the backward passes. `collect(i)` adds into row `i`, so calling it after several
    backward passes of the same task accumulates micro-batches. A shared parameter that no task reached keeps
    `.grad = None`, so the inner optimizer skips it as usual.

    AMP: pass the scaler to `step` and call `update` yourself, never `scaler.step(opt)`::

        scaler.scale(loss).backward(); opt.collect(i)   # per task
        opt.step(grad_scaler=scaler); scaler.update()

    The buffer is unscaled before projecting (so the Gram matrix never overflows from the scale); if it holds a
    non-finite value nothing is projected and a non-finite gradient is handed on, so the scaler skips the step and
    backs off. The projected update is re-multiplied by the scale and unscaled again, together with the private
    grads, by `scaler.unscale_` / `scaler.step` on the inner optimizer: exact, since GradScaler's scales are powers of
    two, and the scaler's own inf checks and bookkeeping stay in charge.

    Distributed (torch.distributed initialised, more than one rank in `process_group`): `step` all-reduces (mean)
    the whole `(m, P)` buffer before projecting, because the projection is nonlinear, and the private grads too, so
    the ranks stay identical. Do not also wrap the model in DistributedDataParallel (it would average every backward
    pass again). Every rank must run the same tasks on the same model, so the same private grads exist everywhere.
    At construction the generator's state is broadcast from the group's first rank, so all ranks draw the same orders
    even when seeded per rank.

    Works with timm and torch LR schedulers: `param_groups`, `state` and `defaults` are the inner optimizer's.
    `state_dict()` is the inner optimizer's plus a `'gradient_projection'` entry (generator state and counters), so
    a resumed run draws the same orders; `load_state_dict` also accepts a plain inner state dict.

    Args:
        optimizer: The optimizer that updates all parameters (shared ones included).
        params: The parameters shared by all tasks; all must be in `optimizer` and on one device.
        num_tasks: Number of tasks `m` (widths).
        generator: Source of the random visiting orders; a fresh one seeded from torch's global RNG when None.
        process_group: Group to average over when distributed; the default group when None.
        projection_mode: `'pcgrad'`, or `'sum'` for a plain sum (the no-projection ablation).

    Attributes:
        last_num_conflicts: Projections made in the last step (0 in `'sum'` mode or when the step was non-finite).
        num_conflicts_total: Running total of projections.
        num_steps: Number of `step` calls.
    """

    def __init__(
            self,
            optimizer: Optimizer,
            params: Iterable[torch.Tensor],
            num_tasks: int,
            generator: Optional[torch.Generator] = None,
            process_group: Optional[Any] = None,
            projection_mode: str = 'pcgrad',
    ):
        # Optimizer.__init__ is not called on purpose (as timm's Lookahead): the inner optimizer owns the groups and
        # state; subclassing only makes isinstance checks (torch LR schedulers) pass.
        self._optimizer_step_pre_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: Dict[int, Callable] = OrderedDict()
        if num_tasks < 1:
            raise ValueError(f'num_tasks must be >= 1, got {num_tasks}.')
        if projection_mode not in _MODES:
            raise ValueError(f"Unknown projection_mode '{projection_mode}', expected one of {_MODES}.")
        self.optimizer = optimizer
        self.num_tasks = num_tasks
        self.process_group = process_group
        self.projection_mode = projection_mode

        shared = list({id(p): p for p in params}.values())
        if not shared:
            raise ValueError('GradientProjection needs at least one shared parameter.')
        owned = {id(p) for group in optimizer.param_groups for p in group['params']}
        if any(id(p) not in owned for p in shared):
            raise ValueError('Every shared parameter must be in the wrapped optimizer, or it would never be updated.')
        devices = {p.device for p in shared}
        if len(devices) > 1:
            raise ValueError(f'Shared parameters must be on one device, got {sorted(map(str, devices))}.')
        self._shared: List[torch.Tensor] = shared
        self._slices: List[slice] = []
        offset = 0
        for p in shared:
            self._slices.append(slice(offset, offset + p.numel()))
            offset += p.numel()
        # accumulate low-precision params' grads in fp32; fp64 params keep fp64
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in shared) else torch.float32
        self._buffer = torch.zeros(num_tasks, offset, dtype=dtype, device=shared[0].device)
        self._has_grad = [False] * len(shared)

        if generator is None:
            # seeded from the global RNG so that torch.manual_seed makes runs reproducible
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        self.generator = generator
        self.last_num_conflicts = 0
        self.num_conflicts_total = 0
        self.num_steps = 0
        if self._is_distributed():
            self._broadcast_generator()

    # --- the inner optimizer's view, for schedulers and checkpointing ---

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: List[Dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Dict[Any, Any]:
        return self.optimizer.state

    @state.setter
    def state(self, value: Dict[Any, Any]) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> Dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: Dict[str, Any]) -> None:
        self.optimizer.defaults = value

    @property
    def shared_params(self) -> List[torch.Tensor]:
        """The shared parameters, in buffer order."""
        return list(self._shared)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a group to the inner optimizer; its parameters are private (not projected)."""
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> Dict[str, Any]:
        """Inner state dict plus the generator state and counters under `'gradient_projection'`."""
        state_dict = self.optimizer.state_dict()
        state_dict[_STATE_KEY] = {
            'generator_state': self.generator.get_state(),
            'num_conflicts_total': self.num_conflicts_total,
            'num_steps': self.num_steps,
        }
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a `state_dict()` of this wrapper, or a plain inner one (the generator is then left as is)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(_STATE_KEY, None)
        self.optimizer.load_state_dict(state_dict)
        if extra is not None:
            # map_location may have moved the state to an accelerator; generator states live on the CPU
            self.generator.set_state(extra['generator_state'].cpu())
            self.num_conflicts_total = int(extra.get('num_conflicts_total', 0))
            self.num_steps = int(extra.get('num_steps', 0))

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(num_tasks={self.num_tasks}, projection_mode={self.projection_mode!r}, '
            f'num_shared_params={self._buffer.shape[1]},\n{self.optimizer!r})'
        )

    # --- the step protocol ---

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the inner optimizer's grads and the per-task buffer."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._clear_buffer()

    @torch.no_grad()
    def collect(self, task: int) -> None:
        """Adds the shared parameters' current `.grad` into row `task` and clears them (`None` counts as zero)."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f'task {task} out of range for num_tasks={self.num_tasks}.')
        row = self._buffer[task]
        for k, (p, span) in enumerate(zip(self._shared, self._slices)):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise NotImplementedError('Sparse gradients of shared parameters are not supported.')
            row[span].add_(p.grad.reshape(-1))
            self._has_grad[k] = True
            # set to None rather than zeroed: the next backward can then take its gradient without an addition
            p.grad = None

    @torch.no_grad()
    def step(
            self,
            closure: Optional[Callable[[], Any]] = None,
            grad_scaler: Optional[torch.amp.GradScaler] = None,
            clip_grad: Optional[float] = None,
            clip_mode: str = 'norm',
    ) -> Any:
        """Projects and sums the collected gradients into the shared `.grad`, then steps the inner optimizer.

        Args:
            closure: Not supported (tasks are backpropagated one by one before `step`); must be None.
            grad_scaler: A `torch.amp.GradScaler` whose scaled losses were backpropagated; call its `update()` after.
            clip_grad: Clip all parameters' (unscaled, projected) gradients with timm's `dispatch_clip_grad`.
            clip_mode: `'norm'`, `'value'` or `'agc'`, as in timm.

        Returns:
            What the inner optimizer's `step` returns (None when the scaler skipped it).
        """
        if closure is not None:
            raise ValueError('GradientProjection.step does not take a closure: backward each task, then collect().')
        for p in self._shared:
            if p.grad is not None:
                raise RuntimeError('A shared parameter has a gradient that was not collected: call collect(i) after '
                                   'every backward pass, before step().')
        if self._is_distributed():
            self._all_reduce_grads()

        scaling = grad_scaler is not None and grad_scaler.is_enabled()
        scale = float(grad_scaler.get_scale()) if scaling else 1.
        if scaling:
            self._buffer.mul_(1. / scale)
        finite = not scaling or bool(torch.isfinite(self._buffer).all())
        if finite:
            update = self._combine(self._buffer)
        else:
            # no projection of garbage: hand on the non-finite sum so the scaler skips the step and backs off
            update = self._buffer.sum(0)
            self.last_num_conflicts = 0
        if scaling:
            update.mul_(scale)
        self._write_shared_grads(update)
        self._clear_buffer()
        self.num_steps += 1

        if scaling:
            grad_scaler.unscale_(self.optimizer)
        if clip_grad is not None:
            params = [p for group in self.optimizer.param_groups for p in group['params'] if p.grad is not None]
            dispatch_clip_grad(params, clip_grad, mode=clip_mode)
        if grad_scaler is not None:
            return grad_scaler.step(self.optimizer)
        return self.optimizer.step()

    # --- internals ---

    def _combine(self, grads: torch.Tensor) -> torch.Tensor:
        if self.projection_mode == 'sum':
            self.last_num_conflicts = 0
            return grads.sum(0)
        update, stats = project_conflicting(grads, generator=self.generator, return_stats=True)
        self.last_num_conflicts = stats.num_conflicts
        self.num_conflicts_total += stats.num_conflicts
        return update

    def _write_shared_grads(self, update: torch.Tensor) -> None:
        for k, (p, span) in enumerate(zip(self._shared, self._slices)):
            if not self._has_grad[k]:
                continue  # no task reached it: leave None so the inner optimizer skips it
            grad = update[span].view(p.shape).to(p.dtype)
            if not p.is_contiguous():
                grad = torch.empty_like(p).copy_(grad)  # keep the param's memory layout (e.g. channels_last)
            p.grad = grad

    def _clear_buffer(self) -> None:
        self._buffer.zero_()
        self._has_grad = [False] * len(self._shared)

    def _is_distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1

    def _broadcast_generator(self) -> None:
        states = [self.generator.get_state()]
        dist.broadcast_object_list(states, group=self.process_group, group_src=0)
        self.generator.set_state(states[0].cpu())

    def _all_reduce_grads(self) -> None:
        world_size = dist.get_world_size(self.process_group)
        # one collective for all tasks; the mean over ranks must come before the (nonlinear) projection
        dist.all_reduce(self._buffer, group=self.process_group)
        self._buffer.div_(world_size)
        # whether a shared param got a gradient must agree too, or ranks would write different grads
        has_grad = torch.tensor(self._has_grad, dtype=torch.float32, device=self._buffer.device)
        dist.all_reduce(has_grad, group=self.process_group)
        self._has_grad = (has_grad > 0).tolist()

        shared_ids = {id(p) for p in self._shared}
        buckets: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
        for group in self.optimizer.param_groups:
            for p in group['params']:
                if id(p) not in shared_ids and p.grad is not None:
                    buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        # buckets are built in param-group order, the same on every rank
        for _, grads in sorted(buckets.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=self.process_group)
            flat.div_(world_size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
