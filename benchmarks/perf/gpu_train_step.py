""" The SFSC training step on a GPU against one summed-loss step of the same network: images/s and their ratio.

Setting (issue 10): ``sfsc_resnet50`` at 256x128, batch 64, AMP (bfloat16 by default, float16 with its GradScaler
on request), four widths, 751 classes. Two variants, timed interleaved (one step of each in turn after warm-up
steps, CUDA-synchronised) so that clock changes hit both alike:

* ``sfsc``: the trainer's SFSC step (4 forwards, priorities, 4 backwards handed to GradientProjection, the
  combination, the optimizer step), with GradientProjection's accelerator layout (``layout='auto'``: the task
  gradients as rows of one buffer, a few multi-tensor kernels);
* ``sfsc_blocks``: the same step with the CPU's layout (``layout='blocks'``: a dot product and an addition per
  parameter block, thousands of kernel launches), to show what the layout is worth;
* ``sum``: the same 4 forwards and losses, summed, one backward, the same inner optimizer step.

JSON to ``benchmarks/results/perf/gpu_train_step.json`` (``gpu_train_step_fp16.json`` with float16) with the card's
name, torch / CUDA versions and peak memory; the file's ``history`` (earlier measurements: the first one, before
``layout='auto'``) is kept.

    python benchmarks/perf/gpu_train_step.py                 # needs CUDA; a minute or two on an H100
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.train.config import config_from_dict
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.trainer import create_model

RESULTS = Path(__file__).resolve().parents[1] / 'results' / 'perf'
TARGET_RATIO = 1.05  # the SFSC step against the summed step: train_step.py's target on the CPU


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--model', default='sfsc_resnet50')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--input-size', type=int, nargs=2, default=[256, 128], metavar=('H', 'W'))
    parser.add_argument('--num-classes', type=int, default=751)
    parser.add_argument('--amp-dtype', choices=('bfloat16', 'float16'), default='bfloat16')
    parser.add_argument('--warmup', type=int, default=5, help='untimed steps of each variant first')
    parser.add_argument('--repeats', type=int, default=20, help='timed steps of each variant')
    parser.add_argument('--profile', action='store_true',
                        help='also run each variant 3 times under torch.profiler: kernel launches per step and the '
                             'operators taking the most host time (the step is bound by launching kernels)')
    parser.add_argument('--device', default='cuda', help='cuda; cpu only to check the script itself')
    parser.add_argument('--output', type=Path, default=None,
                        help='JSON to write (default: benchmarks/results/perf/gpu_train_step.json, '
                             'gpu_train_step_fp16.json with --amp-dtype float16)')
    return parser.parse_args()


def profile_variants(variants: Dict[str, Callable[[], None]], synchronize: Callable[[], None],
                     steps: int = 3) -> Dict[str, float]:
    """Kernel launches per step of each variant, and a table of the operators with the most host time."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    launches = {}
    for name, run in variants.items():
        with profile(activities=activities) as prof:
            for _ in range(steps):
                run()
            synchronize()
        averages = prof.key_averages()
        launches[name] = sum(e.count for e in averages if 'LaunchKernel' in e.key) / steps
        print(f'--- {name}: {launches[name]:.0f} kernel launches per step')
        print(averages.table(sort_by='self_cpu_time_total', row_limit=12, max_name_column_width=50))
    return launches


def main() -> int:
    args = parse_args()
    cuda = args.device == 'cuda'
    if cuda and not torch.cuda.is_available():
        print('gpu_train_step: no CUDA device here; run it on a machine with a GPU (the CPU measurement is '
              'benchmarks/perf/train_step.py).', file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    height, width = args.input_size
    cfg = config_from_dict(dict(model=args.model, input_size=[3, height, width], embed_dim=None,
                                batch_size=args.batch_size, method='sfsc', amp=True, amp_dtype=args.amp_dtype,
                                device=args.device))
    device = torch.device(args.device)
    dist = DistInfo(device=device)
    torch.manual_seed(0)
    net = create_model(cfg, args.num_classes).to(device).train()
    step = create_train_step(cfg, net, dist)
    images = torch.randn(args.batch_size, 3, height, width, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    inner, scaler = step.optimizer.optimizer, step.scaler

    def sfsc() -> None:
        step(images, labels, 1.0)

    def sfsc_blocks() -> None:
        step.optimizer.layout = 'blocks'
        try:
            step(images, labels, 1.0)
        finally:
            step.optimizer.layout = 'auto'

    def summed() -> None:
        inner.zero_grad(set_to_none=True)
        total = torch.stack(step.width_losses(images, labels, 1.0)[0]).sum()
        (scaler.scale(total) if scaler is not None else total).backward()
        if scaler is not None:
            scaler.step(inner)
            scaler.update()
        else:
            inner.step()

    variants: Dict[str, Callable[[], None]] = {'sfsc': sfsc, 'sfsc_blocks': sfsc_blocks, 'sum': summed}
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.repeats):
        for name, run in variants.items():
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    images_per_s = {name: args.batch_size / s for name, s in median.items()}
    ratio = median['sfsc'] / median['sum']
    ratio_blocks = median['sfsc_blocks'] / median['sum']
    launches = profile_variants(variants, synchronize) if args.profile else None
    card = torch.cuda.get_device_name() if cuda else f'CPU ({platform.processor() or platform.machine()})'
    print(f'{card}: {args.model} {height}x{width}, batch {args.batch_size}, AMP {args.amp_dtype}, widths '
          f'{cfg.widths}: sfsc {median["sfsc"] * 1e3:.1f} ms ({images_per_s["sfsc"]:.0f} images/s), sum '
          f'{median["sum"] * 1e3:.1f} ms ({images_per_s["sum"]:.0f} images/s), ratio {ratio:.3f}; with the block '
          f'layout {median["sfsc_blocks"] * 1e3:.1f} ms, ratio {ratio_blocks:.3f}')
    print(f'sfsc / sum = {ratio:.3f} (target <= {TARGET_RATIO}, the CPU step\'s of train_step.py): '
          + ('met' if ratio <= TARGET_RATIO else 'missed'))
    output = args.output or RESULTS / ('gpu_train_step_fp16.json' if args.amp_dtype == 'float16' else
                                       'gpu_train_step.json')
    # earlier measurements kept in the file they belong to (e.g. the first one, before layout='auto')
    history = json.loads(output.read_text()).get('history', []) if output.is_file() else []
    write_json_atomically(output, dict(
        benchmark='gpu_train_step', device=card, model=args.model, input_size=[3, height, width],
        batch_size=args.batch_size, amp_dtype=args.amp_dtype, widths=cfg.widths, num_classes=args.num_classes,
        warmup=args.warmup, repeats=args.repeats, median_s=median, images_per_s=images_per_s, times_s=times,
        ratio_sfsc_over_sum=ratio, ratio_sfsc_blocks_over_sum=ratio_blocks, kernel_launches_per_step=launches,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
        torch=torch.__version__, cuda=torch.version.cuda, platform=platform.platform(),
        **({'history': history} if history else {})))
    print(f'wrote {output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
