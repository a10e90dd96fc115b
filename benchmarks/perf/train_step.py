""" Cost of the SFSC step against one backward of the summed losses, and of each width alone.

Full setting: sfsc_resnet50 at 256x128, batch 16, widths 0.25 / 0.5 / 0.75 / 1.0, on this machine's CPU.
Variants, timed interleaved (one step of each in turn, `--repeats` rounds after one warm-up round) so that load from
other processes hits them alike; the median is reported:

* ``sfsc``: the trainer's SFSC step: 4 forwards, priorities, 4 backwards each collected by GradientProjection, the
  combination from the Gram matrix, the optimizer step;
* ``sfsc_layer``: the same step with ``projection_granularity: layer`` (one PCGrad decision per shared parameter
  tensor instead of one for the whole gradient);
* ``sum``: the same 4 forwards and losses, their sum, one backward, the same optimizer step;
* ``width_<w>``: one forward + backward + step at width w alone;
* ``compute``: the same widths as plain static timm sub-models (``sfsc_timm.extract``): each one's forward,
  cross-entropy and backward, one SGD step over all of them. What the convolutions cost without any switchable
  layer, per-width BatchNorm or gradient bookkeeping.

The ratio sfsc / sum is the cost of the per-width gradient bookkeeping (target <= 1.05). Inside the sfsc step the
bookkeeping itself (GradientProjection's collect, Gram matrix and combination) is timed too, and reported as a share
of the summed step: where the time goes. Each variant is timed by the wall clock and by this process's CPU time; on a
machine that other jobs load, the CPU time (with ``--threads 1``) is the steadier of the two, and the load average is
recorded. JSON to `benchmarks/results/perf/train_step.json` (`train_step_quick.json` with `--quick`,
`train_step_main_job.json` with `--main-job`), with images/s of each variant (one step trains the batch at every width).

    python benchmarks/perf/train_step.py              # full size, several minutes on 2 cores
    python benchmarks/perf/train_step.py --quick      # sfsc_resnet18 at 128x64, batch 8
    python benchmarks/perf/train_step.py --main-job   # the main job's step: its recipe's model, input, batch and method
"""
import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

import torch.nn.functional as F

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.models import extract
from sfsc_timm.optim import GradientProjection
from sfsc_timm.train.config import config_from_dict, load_recipe
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.host_allocator import keep_freed_memory
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.steps import SFSCStep
from sfsc_timm.train.trainer import create_model

QUICK = dict(model='sfsc_resnet18', height=128, width=64, batch_size=8, repeats=3)
MAIN_JOB_RECIPE = Path(__file__).resolve().parents[2] / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'
TARGET_RATIO = 1.05
TARGET_COMPUTE_RATIO = 1.5  # the step against the same widths' plain static sub-models


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='sfsc_resnet50')
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--num-classes', type=int, default=751, help='classifier size (Market-1501: 751)')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (after one warm-up round)')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--method', default='sfsc', help='the step timed as "sfsc" (any sfsc method)')
    parser.add_argument('--quick', action='store_true', help=f'small run: {QUICK}')
    parser.add_argument('--main-job', action='store_true',
                        help=f'the main job\'s step: model, input, batch and method of {MAIN_JOB_RECIPE.name}')
    parser.add_argument('--channels-last', action='store_true', help='every network and batch in channels-last')
    parser.add_argument('--default-allocator', action='store_true',
                        help="glibc malloc's default settings, not those `sfsc-timm train` applies "
                             '(sfsc_timm.train.host_allocator)')
    parser.add_argument('--output', type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.main_job:
        main_job = config_from_dict(load_recipe(MAIN_JOB_RECIPE))
        args.model, args.method, args.batch_size = main_job.model, main_job.method, main_job.batch_size
        args.options = main_job.to_dict()[main_job.method]  # the recipe's options of its method
        args.height, args.width = main_job.input_size[1:]
        args.num_classes, args.embed_dim = 10, main_job.embed_dim  # Fashion-MNIST
    else:
        args.embed_dim, args.options = None, {}
    return args


def summed_step(step: SFSCStep) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The baseline: the SFSC step's forwards and losses, summed, one backward, the plain inner optimizer."""
    inner = step.optimizer.optimizer

    def run(images: torch.Tensor, labels: torch.Tensor) -> None:
        inner.zero_grad(set_to_none=True)
        torch.stack(step.width_losses(images, labels, 1.0)[0]).sum().backward()
        inner.step()
    return run


class BookkeepingTimer:
    """Wall and CPU seconds of GradientProjection's own work (collect, Gram matrix, combination) in the timed calls."""

    def __init__(self, projection: GradientProjection):
        self.seconds = self.cpu_seconds = 0.0
        # what the step calls: the collection, the Gram matrices and the decisions, the weighted sums
        for name in ('collect', '_block_weights', '_combine'):
            setattr(projection, name, self._timed(getattr(projection, name)))

    def _timed(self, method: Callable) -> Callable:
        def run(*args, **kwargs):
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.process_time() - cpu_start
        return run


def single_width_step(step: SFSCStep, width: float) -> Callable[[torch.Tensor, torch.Tensor], None]:
    inner = step.optimizer.optimizer

    def run(images: torch.Tensor, labels: torch.Tensor) -> None:
        inner.zero_grad(set_to_none=True)
        step.own_loss(step.forward_width(width, images), labels, 1.0)[0].backward()
        inner.step()
    return run


def compute_only_step(step: SFSCStep, widths: List[float], lr: float,
                      channels_last: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The same widths as plain static sub-models: forward, cross-entropy, backward each; one SGD step for all."""
    models = [extract(step.net, w).train() for w in widths]
    if channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    params = [p for m in models for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)

    def run(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        for model in models:
            F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return run


def main() -> None:
    args = parse_args()
    # what `sfsc-timm train` does, so the benchmark times the step as training runs it
    allocator = 'glibc default' if args.default_allocator else (
        'keeps freed memory' if keep_freed_memory() else 'default (settings not applied)')
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_dict(dict(model=args.model, input_size=[3, args.height, args.width], embed_dim=args.embed_dim,
                                batch_size=args.batch_size, method=args.method, **{args.method: args.options}))
    torch.manual_seed(0)
    net = create_model(cfg, args.num_classes).train()
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    step = create_train_step(cfg, net, DistInfo())
    images = torch.randn(args.batch_size, 3, args.height, args.width)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.num_classes, (args.batch_size,))
    timer = BookkeepingTimer(step.optimizer)
    # per SFSC variant: projections per step, and the bookkeeping's wall and CPU seconds per step
    conflicts: Dict[str, List[int]] = {'sfsc': [], 'sfsc_layer': []}
    bookkeeping: Dict[str, List[float]] = {'sfsc': [], 'sfsc_layer': []}
    bookkeeping_cpu: Dict[str, List[float]] = {'sfsc': [], 'sfsc_layer': []}

    def sfsc_step(name: str, granularity: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def run(images: torch.Tensor, labels: torch.Tensor) -> None:
            timer.seconds = timer.cpu_seconds = 0.0
            step.optimizer.granularity = granularity  # the one setting the two variants differ in
            try:
                conflicts[name].append(step(images, labels, 1.0).num_conflicts)
            finally:
                step.optimizer.granularity = 'model'
            bookkeeping[name].append(timer.seconds)
            bookkeeping_cpu[name].append(timer.cpu_seconds)
        return run

    variants: Dict[str, Callable] = {'sfsc': sfsc_step('sfsc', 'model'), 'sfsc_layer': sfsc_step('sfsc_layer', 'layer'),
                                     'sum': summed_step(step)}
    variants.update({f'width_{w:g}': single_width_step(step, w) for w in sorted(cfg.widths)})
    variants['compute'] = compute_only_step(step, sorted(cfg.widths), cfg.lr, args.channels_last)
    times: Dict[str, List[float]] = {name: [] for name in variants}
    cpu_times: Dict[str, List[float]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    for round_ in range(args.repeats + 1):
        for name, run in variants.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            run(images, labels)
            if round_ > 0:  # round 0 warms up allocators and kernels
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
        print(f'round {round_}/{args.repeats}: ' + ', '.join(
            f'{n} {t[-1]:.2f}s' for n, t in times.items() if t), flush=True)

    median = {name: statistics.median(t) for name, t in times.items()}
    cpu_median = {name: statistics.median(t) for name, t in cpu_times.items()}
    ratio = median['sfsc'] / median['sum']
    compute_ratio = median['sfsc'] / median['compute']
    images_per_s = {name: args.batch_size / t for name, t in median.items()}
    cpu_ratio = cpu_median['sfsc'] / cpu_median['sum']
    layer_ratio = median['sfsc_layer'] / median['sum']
    layer_cpu_ratio = cpu_median['sfsc_layer'] / cpu_median['sum']
    bookkeeping_s = statistics.median(bookkeeping['sfsc'][1:])  # without the warm-up round
    bookkeeping_cpu_s = statistics.median(bookkeeping_cpu['sfsc'][1:])
    layer_bookkeeping_s = statistics.median(bookkeeping['sfsc_layer'][1:])
    rows = [(name, median[name], min(times[name]), max(times[name])) for name in variants]
    print(f'\n{args.model} ({args.method}) {args.height}x{args.width}, batch {args.batch_size}, widths {cfg.widths}, '
          f'{torch.get_num_threads()} threads, {args.repeats} rounds'
          + (', channels-last' if args.channels_last else '') + f', allocator: {allocator}')
    print(f'{"variant":<12} {"median s":>9} {"min s":>8} {"max s":>8} {"CPU s":>8} {"images/s":>9}')
    for name, med, lo, hi in rows:
        print(f'{name:<12} {med:9.3f} {lo:8.3f} {hi:8.3f} {cpu_median[name]:8.3f} {images_per_s[name]:9.1f}')
    print(f'sfsc / compute = {compute_ratio:.3f} (target <= {TARGET_COMPUTE_RATIO}): the step against the same '
          f'widths as plain static sub-models')
    print(f'sfsc / sum = {ratio:.3f} wall clock, {cpu_ratio:.3f} CPU time (target <= {TARGET_RATIO}); gradient '
          f'bookkeeping in the sfsc step {bookkeeping_s:.3f} s = {bookkeeping_s / median["sum"]:.3f} of the summed '
          f'step ({bookkeeping_cpu_s / cpu_median["sum"]:.3f} in CPU time); load average {load_before[0]:.1f} -> '
          f'{os.getloadavg()[0]:.1f}; projections per sfsc step: {conflicts["sfsc"]}')
    print(f'sfsc_layer / sum = {layer_ratio:.3f} wall clock, {layer_cpu_ratio:.3f} CPU time; its bookkeeping '
          f'{layer_bookkeeping_s:.3f} s = {layer_bookkeeping_s / median["sum"]:.3f} of the summed step; projections '
          f'per step: {conflicts["sfsc_layer"]}')

    result = dict(
        benchmark='train_step', model=args.model, method=args.method, input_size=[3, args.height, args.width],
        batch_size=args.batch_size, widths=cfg.widths, num_classes=args.num_classes, repeats=args.repeats,
        threads=torch.get_num_threads(), channels_last=args.channels_last, allocator=allocator,
        images_per_s=images_per_s,
        ratio_sfsc_over_compute=compute_ratio, target_compute_ratio=TARGET_COMPUTE_RATIO,
        meets_compute_target=compute_ratio <= TARGET_COMPUTE_RATIO,
        median_s=median, min_s={n: min(t) for n, t in times.items()}, times_s=times, ratio_sfsc_over_sum=ratio,
        cpu_median_s=cpu_median, cpu_times_s=cpu_times, ratio_sfsc_over_sum_cpu=cpu_ratio,
        target_ratio=TARGET_RATIO, meets_target=max(ratio, cpu_ratio) <= TARGET_RATIO,
        bookkeeping_median_s=bookkeeping_s, bookkeeping_over_sum=bookkeeping_s / median['sum'],
        bookkeeping_cpu_median_s=bookkeeping_cpu_s, bookkeeping_over_sum_cpu=bookkeeping_cpu_s / cpu_median['sum'],
        bookkeeping_s=bookkeeping['sfsc'][1:], conflicts_per_step=conflicts['sfsc'],
        ratio_sfsc_layer_over_sum=layer_ratio, ratio_sfsc_layer_over_sum_cpu=layer_cpu_ratio,
        layer_bookkeeping_median_s=layer_bookkeeping_s, layer_bookkeeping_over_sum=layer_bookkeeping_s / median['sum'],
        layer_bookkeeping_s=bookkeeping['sfsc_layer'][1:], layer_conflicts_per_step=conflicts['sfsc_layer'],
        load_average=dict(before=load_before, after=os.getloadavg()),
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     torch=torch.__version__),
        note='interleaved rounds on a shared machine; medians over rounds')
    name = 'train_step_main_job' if args.main_job else 'train_step_quick' if args.quick else 'train_step'
    output = args.output or Path(__file__).resolve().parents[1] / 'results' / 'perf' / (
        name + ('_channels_last' if args.channels_last else '') + ('_default_allocator' if args.default_allocator
                                                                     else '') + '.json')
    write_json_atomically(output, result)
    print(f'wrote {output}')


if __name__ == '__main__':
    main()
