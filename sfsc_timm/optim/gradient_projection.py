""" GradientProjection: one gradient per task (width) of the shared parameters, combined, then the optimizer steps.

Composed around any torch optimizer, not a subclass of one: the optimizer keeps its parameters, state and learning
rates; this object keeps the per-task gradients between the backward passes and writes their combination (an object:
:class:`~sfsc_timm.optim.PCGrad` or :class:`~sfsc_timm.optim.Sum`) into ``.grad`` before the optimizer steps.

Why it is cheap (docs/design.md, "The SFSC step"): a task's gradient is kept by reference, never copied into a
buffer; and when the caller says where each task's gradient can be non-zero (``supports``: a width-w sub-network
only reaches the leading ``[:out_w, :in_w]`` block of a shared weight), the Gram matrix and the combination read only
those blocks. Both give the same update as the dense computation.
"""
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from timm.utils.clip_grad import dispatch_clip_grad
from torch.optim import Optimizer

from .combination import GradientCombination, PCGrad, Sum
from .projection import gram_matrix

__all__ = ['GradientProjection', 'Extent']

_STATE_KEY = 'gradient_projection'
_MODES = {'pcgrad': PCGrad, 'sum': Sum}
_LAYOUTS = ('auto', 'blocks', 'flat')
_GRANULARITIES = ('model', 'layer')

_DOT_CHUNK = 1 << 18  # elements of a block dot's temporary products: 1 MiB of float32, within a core's cache

# leading extent of a task's gradient in every dimension: it is zero outside grad[:e0, :e1, ...]
Extent = Tuple[int, ...]


def _extent(index: Any, shape: torch.Size, where: str) -> Extent:
    """A leading-slice index (as ``static_state_map`` gives: a tuple of ``slice(0, n)``) as a full extent."""
    if index is None or index == ():
        return tuple(shape)
    index = index if isinstance(index, tuple) else (index,)
    if len(index) > len(shape):
        raise ValueError(f'{where}: index {index} has more dimensions than the parameter {tuple(shape)}.')
    extent = []
    for s, size in zip(index + (slice(None),) * (len(shape) - len(index)), shape):
        if not isinstance(s, slice) or s.start not in (None, 0) or s.step not in (None, 1):
            raise ValueError(f'{where}: supports must be leading slices slice(0, n), got {index}.')
        extent.append(size if s.stop is None else min(max(int(s.stop), 0), size))
    return tuple(extent)


def _block(tensor: torch.Tensor, extent: Extent) -> torch.Tensor:
    if tuple(extent) == tuple(tensor.shape):
        return tensor
    return tensor[tuple(slice(0, n) for n in extent)]


def _block_dot(a: torch.Tensor, b: torch.Tensor, extent: Extent) -> torch.Tensor:
    """``a[block] . b[block]`` without copying the block where its memory layout allows."""
    shape = tuple(a.shape)
    if math.prod(extent) == 0:
        return a.new_zeros((), dtype=torch.float32)
    fast = a.dtype in (torch.float32, torch.float64) and a.is_contiguous() and b.is_contiguous()
    if fast and extent[1:] == shape[1:]:  # leading rows: one contiguous prefix
        n = math.prod(extent)
        return torch.dot(a.view(-1)[:n], b.view(-1)[:n])
    if fast and len(shape) >= 2 and extent[2:] == shape[2:]:  # leading rows and columns of a (rows, -1) view
        cols = extent[1] * math.prod(shape[2:])
        a2, b2 = a.view(shape[0], -1)[:extent[0], :cols], b.view(shape[0], -1)[:extent[0], :cols]
        # vecdot writes the products to a temporary before summing each row: rows taken a few at a time keep it
        # in cache (each row's dot, so the sum, is the same whatever the chunk)
        rows = max(1, _DOT_CHUNK // cols)
        if rows >= extent[0]:
            return torch.linalg.vecdot(a2, b2).sum()
        return torch.cat([torch.linalg.vecdot(a2[r:r + rows], b2[r:r + rows]) for r in range(0, extent[0], rows)]).sum()
    index = tuple(slice(0, n) for n in extent)
    return (a[index].float() * b[index].float()).sum()


class GradientProjection:
    """Combines one gradient per task (width) of the shared parameters, then steps the wrapped optimizer.

    Usage, one step::

        opt = GradientProjection(torch.optim.SGD(net.parameters(), lr=0.1), shared_params, num_tasks=len(widths))
        opt.zero_grad()
        for i, loss in enumerate(losses):      # one backward per task, no retain_graph needed
            loss.backward()
            opt.collect(i)                     # takes the shared grads as task i's gradient
        opt.step()                             # combine -> shared .grad, then the optimizer steps

    `shared_params` are the parameters every task updates; the others (e.g. a width's private BatchNorm) keep the
    `.grad` they accumulate over the backward passes. `collect(i)` adds to task `i`'s gradient, so calling it after
    several backward passes of the same task accumulates micro-batches. A shared parameter that no task reached
    keeps `.grad = None`, so the optimizer skips it as usual.

    Schedulers: timm's read and write `param_groups`, which this object shares with the optimizer; a torch
    `LRScheduler` takes the optimizer itself (`opt.optimizer`).

    AMP: pass the scaler to `step` and call `update` yourself, never `scaler.step(opt)`::

        scaler.scale(loss).backward(); opt.collect(i)   # per task
        opt.step(grad_scaler=scaler); scaler.update()

    The combination is computed on the scaled gradients (the PCGrad weights do not change when every gradient is
    multiplied by the same power of two) and `scaler.unscale_` / `scaler.step` on the optimizer then unscale it with
    the private grads, so the scaler's inf checks and bookkeeping stay in charge. Non-finite gradients are summed,
    not projected, so that the scaler skips the step and backs off.

    Distributed (torch.distributed initialised, more than one rank in `process_group`): `step` all-reduces (mean)
    every task's gradient before combining, because the projection is nonlinear, and the private grads too, so the
    ranks stay identical. Do not also wrap the model in DistributedDataParallel (it would average every backward
    pass again). At construction the combination's state (its random generator) is broadcast from the group's first
    rank, so all ranks draw the same orders even when seeded per rank.

    `state_dict()` is the optimizer's plus a `'gradient_projection'` entry (generator state and counters), so a
    resumed run draws the same orders; `load_state_dict` also accepts a plain optimizer state dict.

    Args:
        optimizer: The optimizer that updates all parameters (shared ones included).
        params: The parameters shared by all tasks; all must be in `optimizer`.
        num_tasks: Number of tasks `m` (widths).
        generator: Source of PCGrad's random visiting orders (see :class:`~sfsc_timm.optim.PCGrad`).
        process_group: Group to average over when distributed; the default group when None.
        projection_mode: `'pcgrad'`, or `'sum'` for a plain sum (the no-projection ablation).
        merge: How the combination merges the tasks' (projected) gradients of the shared parameters: `'sum'` or
            `'mean'` (the public SFSC reference's); private parameters keep their own gradient either way.
        combination: The combination object itself, instead of `projection_mode` / `generator` / `merge`.
        supports: Optional promise, per shared parameter, of where each task's gradient can be non-zero: a list
            (one entry per task) of leading-slice indices such as ``(slice(0, 64), slice(0, 32))``, or None for
            the whole tensor. The Gram matrix and the combination then read only those blocks. A wrong promise
            gives a wrong update; :func:`sfsc_timm.train.params.width_gradient_supports` derives it from the
            switchable layers.
        layout: How the Gram matrix and the combination read the task gradients: ``'blocks'`` (per parameter, only
            each task's support: the least memory traffic, best on a CPU), ``'flat'`` (each task's gradients copied
            into one row of an ``(m, N)`` buffer with a few multi-tensor kernels, then ``m (m + 1) / 2`` dot products
            and ``m`` scaled additions: a handful of kernel launches instead of thousands, best on a GPU), or
            ``'auto'`` (flat on an accelerator, blocks on the CPU). Both give the same update up to rounding (the
            dot products are summed in another order).
        granularity: What one combination decides over: ``'model'`` (the SFSC paper's, and PCGrad's: one decision
            on the whole shared parameter vector) or ``'layer'`` (one decision per shared parameter tensor, on that
            tensor's own Gram matrix, as Wang et al. 2021's layer-wise Gradient Vaccine: two tasks may agree on the
            whole and still pull apart in one layer). ``'layer'`` reads the gradients in blocks whatever the layout.

    Attributes:
        optimizer: The wrapped optimizer.
        combination: How the task gradients combine.
        last_num_conflicts: Projections made in the last step (0 for a plain sum or a non-finite step).
        num_conflicts_total: Running total of projections.
        num_steps: Number of `step` calls.
        last_layer_grams: ``(K, m, m)`` float64 CPU Gram matrices of the last step, one per shared parameter (in
            `shared_params` order), kept as a diagnostic (how often tasks conflict within a layer); None when the
            last step did not compute them (a plain sum, or the flat layout). On a step at granularity ``'model'``
            that projected nothing the diagonal (the squared norms) was not needed, so not computed: NaN where the
            task reached the parameter, 0 where it did not.
    """

    def __init__(
            self,
            optimizer: Optimizer,
            params: Iterable[torch.Tensor],
            num_tasks: int,
            generator: Optional[torch.Generator] = None,
            process_group: Optional[Any] = None,
            projection_mode: str = 'pcgrad',
            merge: str = 'sum',
            combination: Optional[GradientCombination] = None,
            supports: Optional[Mapping[torch.Tensor, Sequence[Any]]] = None,
            layout: str = 'auto',
            granularity: str = 'model',
    ):
        if num_tasks < 1:
            raise ValueError(f'num_tasks must be >= 1, got {num_tasks}.')
        if combination is None:
            if projection_mode not in _MODES:
                raise ValueError(f"Unknown projection_mode '{projection_mode}', expected one of {tuple(_MODES)}.")
            combination = PCGrad(generator, merge=merge) if projection_mode == 'pcgrad' else Sum(merge=merge)
        elif generator is not None or merge != 'sum':
            raise ValueError('Pass the generator and the merge to the combination object, not to GradientProjection.')
        if layout not in _LAYOUTS:
            raise ValueError(f"Unknown layout '{layout}', expected one of {_LAYOUTS}.")
        if granularity not in _GRANULARITIES:
            raise ValueError(f"Unknown granularity '{granularity}', expected one of {_GRANULARITIES}.")
        if granularity == 'layer' and layout == 'flat':
            raise ValueError("granularity='layer' decides per parameter tensor, so it reads the gradients in blocks: "
                             "use layout='auto' or 'blocks'.")
        self.optimizer = optimizer
        self.combination = combination
        self.num_tasks = num_tasks
        self.layout = layout
        self.granularity = granularity
        self.last_layer_grams: Optional[torch.Tensor] = None
        self.process_group = process_group

        shared = list({id(p): p for p in params}.values())
        if not shared:
            raise ValueError('GradientProjection needs at least one shared parameter.')
        owned = {id(p) for group in optimizer.param_groups for p in group['params']}
        if any(id(p) not in owned for p in shared):
            raise ValueError('Every shared parameter must be in the wrapped optimizer, or it would never be updated.')
        self._shared: List[torch.Tensor] = shared
        self._extents: List[List[Extent]] = [self._task_extents(p, k, supports) for k, p in enumerate(shared)]
        # _grads[i][k]: task i's gradient of shared parameter k, taken from .grad by reference (None: zero)
        self._grads: List[List[Optional[torch.Tensor]]] = self._empty()
        self.num_steps = 0
        if self._is_distributed():
            self._broadcast_combination_state()

    def _task_extents(self, p: torch.Tensor, k: int, supports) -> List[Extent]:
        given = None if supports is None else supports.get(p)
        if given is None:
            return [tuple(p.shape)] * self.num_tasks
        if len(given) != self.num_tasks:
            raise ValueError(f'supports of shared parameter {k} name {len(given)} tasks, expected {self.num_tasks}.')
        return [_extent(index, p.shape, f'supports of shared parameter {k}, task {i}') for i, index in
                enumerate(given)]

    def _empty(self) -> List[List[Optional[torch.Tensor]]]:
        return [[None] * len(self._shared) for _ in range(self.num_tasks)]

    # --- what schedulers and the trainer read ---

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The optimizer's parameter groups (timm schedulers set the learning rate here)."""
        return self.optimizer.param_groups

    @property
    def shared_params(self) -> List[torch.Tensor]:
        return list(self._shared)

    @property
    def generator(self) -> Optional[torch.Generator]:
        return getattr(self.combination, 'generator', None)

    @property
    def last_num_conflicts(self) -> int:
        return self.combination.last_num_conflicts

    @property
    def num_conflicts_total(self) -> int:
        return self.combination.num_conflicts_total

    def state_dict(self) -> Dict[str, Any]:
        """The optimizer's state dict plus the combination's state and the step count under `'gradient_projection'`."""
        state_dict = self.optimizer.state_dict()
        state_dict[_STATE_KEY] = dict(self.combination.state_dict(), num_steps=self.num_steps)
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a `state_dict()` of this object, or a plain optimizer one (the combination is then left as is)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(_STATE_KEY, None)
        self.optimizer.load_state_dict(state_dict)
        if extra is not None:
            self.combination.load_state_dict(extra)
            self.num_steps = int(extra.get('num_steps', 0))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_tasks={self.num_tasks}, combination={self.combination!r}, '
                f'num_shared_params={sum(p.numel() for p in self._shared)},\n{self.optimizer!r})')

    # --- the step protocol ---

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the optimizer's grads and the collected task gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._grads = self._empty()

    @torch.no_grad()
    def collect(self, task: int) -> None:
        """Takes the shared parameters' current `.grad` as (or adds it to) task `task`'s gradient; clears `.grad`."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f'task {task} out of range for num_tasks={self.num_tasks}.')
        row = self._grads[task]
        for k, p in enumerate(self._shared):
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise NotImplementedError('Sparse gradients of shared parameters are not supported.')
            if row[k] is None:
                row[k] = grad  # by reference: the next backward allocates a fresh .grad
            else:
                row[k].add_(grad)
            p.grad = None

    @torch.no_grad()
    def step(
            self,
            closure: Optional[Callable[[], Any]] = None,
            grad_scaler: Optional[torch.amp.GradScaler] = None,
            clip_grad: Optional[float] = None,
            clip_mode: str = 'norm',
    ) -> Any:
        """Combines the collected gradients into the shared `.grad`, then steps the optimizer.

        Args:
            closure: Not supported (tasks are backpropagated one by one before `step`); must be None.
            grad_scaler: A `torch.amp.GradScaler` whose scaled losses were backpropagated; call its `update()` after.
            clip_grad: Clip all parameters' (unscaled, combined) gradients with timm's `dispatch_clip_grad`.
            clip_mode: `'norm'`, `'value'` or `'agc'`, as in timm.

        Returns:
            What the optimizer's `step` returns (None when the scaler skipped it).
        """
        if closure is not None:
            raise ValueError('GradientProjection.step does not take a closure: backward each task, then collect().')
        if any(p.grad is not None for p in self._shared):
            raise RuntimeError('A shared parameter has a gradient that was not collected: call collect(i) after '
                               'every backward pass, before step().')
        if self._is_distributed():
            self._all_reduce_grads()
        self.last_layer_grams = None
        if self._uses_flat_layout():
            self._combine_flat()
        else:
            exact_non_finite = grad_scaler is not None and grad_scaler.is_enabled()
            for k, weights in enumerate(self._block_weights(exact_non_finite)):
                self._shared[k].grad = self._combine(k, weights)
        self._grads = self._empty()
        self.num_steps += 1

        if grad_scaler is not None and grad_scaler.is_enabled():
            grad_scaler.unscale_(self.optimizer)
        if clip_grad is not None:
            params = [p for group in self.optimizer.param_groups for p in group['params'] if p.grad is not None]
            dispatch_clip_grad(params, clip_grad, mode=clip_mode)
        if grad_scaler is not None:
            return grad_scaler.step(self.optimizer)
        return self.optimizer.step()

    # --- internals ---

    def _weights(self, gram: torch.Tensor) -> List[float]:
        if not bool(torch.isfinite(gram).all()):
            return self._plain_sum()
        return self.combination.weights(gram, self.num_tasks).tolist()

    def _plain_sum(self) -> List[float]:
        # no projection of garbage: hand on the non-finite sum, so a grad scaler skips the step and backs off
        self.combination.skip()
        return [1.0] * self.num_tasks

    def _block_weights(self, exact_non_finite: bool) -> List[List[float]]:
        """The tasks' weights for each shared parameter: one decision for all of them (granularity ``'model'``) or
        one per parameter (``'layer'``).

        At granularity ``'model'`` the dot products between tasks come first: when none is negative nothing is
        projected, the combination's :meth:`~sfsc_timm.optim.GradientCombination.agreeing_weights` apply and the
        squared norms (the Gram diagonal, the larger part of its cost: each width's whole support) are never read.
        `exact_non_finite` (a grad scaler is stepping) asks for the whole matrix every step, so that a non-finite
        gradient anywhere is seen and summed for the scaler to skip, as before."""
        num_params = len(self._shared)
        if not self.combination.needs_gram:
            return [self.combination.weights(None, self.num_tasks).tolist()] * num_params
        if self.granularity == 'model' and not exact_non_finite:
            between = self._gram_terms(diagonal=False)
            model_between = self._model_gram(*between)
            agreeing = bool(torch.isfinite(model_between).all()) and not bool((model_between < 0).any())
            weights = self.combination.agreeing_weights(self.num_tasks) if agreeing else None
            if weights is not None:
                self.last_layer_grams = self._layer_grams(*between, unknown_diagonal=self._reached())
                return [weights.tolist()] * num_params
            terms = _concat_terms(between, self._gram_terms(between=False))
        else:
            terms = self._gram_terms()
        grams = self.last_layer_grams = self._layer_grams(*terms)
        if self.granularity == 'model':
            return [self._weights(self._model_gram(*terms))] * num_params
        if not bool(torch.isfinite(grams).all()):  # one check for all parameters: a non-finite step is summed whole
            return [self._plain_sum()] * num_params
        weights, num_conflicts = [], 0
        for gram in grams:
            weights.append(self.combination.weights(gram, self.num_tasks).tolist())
            num_conflicts += self.combination.last_num_conflicts
        self.combination.last_num_conflicts = num_conflicts  # the step's, not the last parameter's
        return weights

    def _reached(self) -> torch.Tensor:
        """``(K, m)`` bool: whether task i's backward reached shared parameter k."""
        return torch.tensor([[row[k] is not None for row in self._grads] for k in range(len(self._shared))],
                            dtype=torch.bool).reshape(len(self._shared), self.num_tasks)

    @torch.no_grad()
    def _gram_terms(self, diagonal: bool = True, between: bool = True) -> Tuple[List[int], List[int], torch.Tensor]:
        """Every ``g_i . g_j`` (``i <= j``; only ``i == j`` or only ``i < j`` when `between` or `diagonal` is
        False) of every shared parameter ``k``, on the tasks' common support: the lists of ``k`` and ``i * m + j``,
        and the float64 CPU dot products."""
        m = self.num_tasks
        params, pairs, terms = [], [], []
        for k in range(len(self._shared)):
            for i in range(m):
                a = self._grads[i][k]
                if a is None:
                    continue
                for j in range(i if diagonal else i + 1, m if between else i + 1):
                    b = self._grads[j][k]
                    if b is None:
                        continue
                    common = tuple(map(min, self._extents[k][i], self._extents[k][j]))
                    params.append(k)
                    pairs.append(i * m + j)
                    terms.append(_block_dot(a, b, common).double())
        # one transfer from the device for all the dot products
        dots = torch.stack(terms).cpu() if terms else torch.zeros(0, dtype=torch.float64)
        return params, pairs, dots

    def _model_gram(self, params: List[int], pairs: List[int], dots: torch.Tensor) -> torch.Tensor:
        m = self.num_tasks
        gram = torch.zeros(m * m, dtype=torch.float64)
        if pairs:
            gram.index_add_(0, torch.tensor(pairs), dots)
        gram = gram.view(m, m)
        return torch.triu(gram) + torch.triu(gram, 1).t()

    def _layer_grams(self, params: List[int], pairs: List[int], dots: torch.Tensor,
                     unknown_diagonal: Optional[torch.Tensor] = None) -> torch.Tensor:
        m, num_params = self.num_tasks, len(self._shared)
        grams = torch.zeros(num_params * m * m, dtype=torch.float64)
        if pairs:
            grams.index_add_(0, torch.tensor(params) * (m * m) + torch.tensor(pairs), dots)
        grams = grams.view(num_params, m, m)
        grams = torch.triu(grams) + torch.triu(grams, 1).transpose(1, 2)
        if unknown_diagonal is not None:  # norms not computed: NaN where a task reached the parameter, 0 where not
            grams.diagonal(dim1=1, dim2=2).masked_fill_(unknown_diagonal, float('nan'))
        return grams

    @torch.no_grad()
    def gram_matrix(self) -> torch.Tensor:
        """``(m, m)`` float64 CPU Gram matrix of the collected task gradients, reading only their supports."""
        return self._model_gram(*self._gram_terms())

    @torch.no_grad()
    def layer_gram_matrices(self) -> torch.Tensor:
        """``(K, m, m)`` float64 CPU Gram matrices of the collected task gradients, one per shared parameter (in
        `shared_params` order), reading only the tasks' supports; they sum to :meth:`gram_matrix`."""
        return self._layer_grams(*self._gram_terms())

    def _uses_flat_layout(self) -> bool:
        if self.layout != 'auto' or self.granularity == 'layer':
            return self.layout == 'flat'
        return self._shared[0].device.type != 'cpu' and len({p.dtype for p in self._shared}) == 1

    @torch.no_grad()
    def _flat_task_grads(self, numels: List[int]) -> torch.Tensor:
        """``(m, N)``: row i holds task i's gradients of every shared parameter, flattened, zeros where it has none."""
        first = self._shared[0]
        flat = torch.zeros(self.num_tasks, sum(numels), dtype=first.dtype, device=first.device)
        for i, row in enumerate(self._grads):
            pairs = [(view.view_as(g), g) for view, g in zip(flat[i].split(numels), row) if g is not None]
            if pairs:  # one multi-tensor copy per task instead of a kernel per parameter
                torch._foreach_copy_([view for view, _ in pairs], [g for _, g in pairs])
        return flat

    @torch.no_grad()
    def _combine_flat(self) -> None:
        """The combination in the flat layout: the Gram matrix from whole rows, the weighted sum of the rows, and each
        shared parameter's `.grad` a view of that sum (None where no task reached it, as in the block layout)."""
        reached = [any(row[k] is not None for row in self._grads) for k in range(len(self._shared))]
        numels = [p.numel() for p in self._shared]
        flat = self._flat_task_grads(numels)
        self._grads = self._empty()  # the rows hold the gradients now; free the originals before the sum is formed
        m = self.num_tasks
        # plain dot products, not a matrix product, which TF32 settings would round
        if self.combination.needs_gram:
            weights = self._weights(gram_matrix(flat, pairwise=True).double().cpu())
        else:
            weights = self.combination.weights(None, m).tolist()
        combined = flat[0].mul_(weights[0])
        for i in range(1, m):
            if weights[i] != 0.0:
                combined.add_(flat[i], alpha=weights[i])
        for k, (p, view) in enumerate(zip(self._shared, combined.split(numels))):
            p.grad = view.view_as(p) if reached[k] else None

    def _combine(self, k: int, weights: List[float]) -> Optional[torch.Tensor]:
        """``sum_i weights[i] * g_i`` of shared parameter `k`, built in place in the task gradient that covers the
        others (the widest width's); only the other tasks' supports are read."""
        present = [i for i in range(self.num_tasks) if self._grads[i][k] is not None]
        if not present:
            return None  # no task reached it: the optimizer skips it
        extents = self._extents[k]
        full = tuple(self._shared[k].shape)
        covering = [i for i in present if all(all(a >= b for a, b in zip(extents[i], extents[j])) for j in present)]
        if covering:
            dest_task = covering[0]
            out = self._grads[dest_task][k]
            if weights[dest_task] != 1.0:
                _block(out, extents[dest_task]).mul_(weights[dest_task])
        else:
            dest_task = None
            out = torch.zeros_like(self._grads[present[0]][k])
        for i in present:
            if i == dest_task or weights[i] == 0.0:
                continue
            extent = extents[i] if dest_task is not None else full
            _block(out, extent).add_(_block(self._grads[i][k], extent), alpha=weights[i])
        return out

    def _is_distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1

    def _broadcast_combination_state(self) -> None:
        states = [self.combination.state_dict()]
        dist.broadcast_object_list(states, group=self.process_group, group_src=0)
        self.combination.load_state_dict(states[0])

    def _all_reduce_grads(self) -> None:
        world_size = dist.get_world_size(self.process_group)
        device = self._shared[0].device
        # whether a task reached a shared param must agree, or the ranks would flatten different layouts
        has = torch.tensor([[g is not None for g in row] for row in self._grads], dtype=torch.float32, device=device)
        dist.all_reduce(has, group=self.process_group)
        for i, row in enumerate(self._grads):
            for k, p in enumerate(self._shared):
                if row[k] is None and has[i, k] > 0:
                    row[k] = torch.zeros_like(p)
        task_grads = [g for row in self._grads for g in row if g is not None]
        # one collective for all tasks; the mean over ranks must come before the (nonlinear) combination
        if task_grads:
            _all_reduce_mean(task_grads, self.process_group, world_size)

        shared_ids = {id(p) for p in self._shared}
        buckets: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
        for group in self.optimizer.param_groups:
            for p in group['params']:
                if id(p) not in shared_ids and p.grad is not None:
                    buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        # buckets are built in param-group order, the same on every rank
        for _, grads in sorted(buckets.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
            _all_reduce_mean(grads, self.process_group, world_size)


def _concat_terms(*parts: Tuple[List[int], List[int], torch.Tensor]) -> Tuple[List[int], List[int], torch.Tensor]:
    """Gram terms of several :meth:`GradientProjection._gram_terms` calls as one."""
    return ([k for part in parts for k in part[0]], [p for part in parts for p in part[1]],
            torch.cat([part[2] for part in parts]))


def _all_reduce_mean(tensors: List[torch.Tensor], group: Any, world_size: int) -> None:
    """Average `tensors` over ranks in place, through one flat buffer per dtype."""
    by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype in sorted(by_dtype, key=str):
        group_tensors = by_dtype[dtype]
        flat = torch.cat([t.reshape(-1) for t in group_tensors])
        dist.all_reduce(flat, group=group)
        flat.div_(world_size)
        offset = 0
        for t in group_tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
