""" GradientProjection's own work per SFSC step, alone: collect, Gram matrix, combination, zeroing.

The same real per-width gradients of ``sfsc_resnet50`` (four widths, 29.2 M shared parameters) are handed to
GradientProjection again and again and its phases are timed, interleaved with those of a reference implementation
when one is given, e.g. the one before issue 12::

    git show e31754e:sfsc_timm/optim/gradient_projection.py > /tmp/gradient_projection_e31754e.py
    python benchmarks/perf/gradient_bookkeeping.py --reference /tmp/gradient_projection_e31754e.py

The input size does not matter (the bookkeeping depends on the parameters only), so the gradients come from a small
batch. JSON to `benchmarks/results/perf/gradient_bookkeeping.json`.
"""
import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.optim import GradientProjection
from sfsc_timm.train.config import config_from_dict
from sfsc_timm.train.params import shared_params, width_gradient_supports
from sfsc_timm.train.trainer import create_model

WIDTHS = (1.0, 0.75, 0.5, 0.25)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='sfsc_resnet50')
    parser.add_argument('--reference', type=Path, default=None,
                        help='a gradient_projection.py to compare with (its GradientProjection class)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--output', type=Path, default=None)
    return parser.parse_args()


def load_reference(path: Path):
    # loaded as a module of sfsc_timm.optim, so that its relative imports resolve
    spec = importlib.util.spec_from_file_location('sfsc_timm.optim._reference_gradient_projection', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GradientProjection


def time_phases(make, net, shared, grads) -> Dict[str, float]:
    inner = torch.optim.SGD(net.parameters(), lr=0.)
    inner.step = lambda *args, **kwargs: None  # the optimizer's own step is not bookkeeping
    projection = make(inner)
    start = time.perf_counter()
    projection.zero_grad()
    phases = dict(zero_grad=time.perf_counter() - start, collect=0.)
    for task, task_grads in enumerate(grads):
        for p, g in zip(shared, task_grads):
            p.grad = None if g is None else g.clone()  # as a backward pass leaves it (not timed)
        start = time.perf_counter()
        projection.collect(task)
        phases['collect'] += time.perf_counter() - start
    start = time.perf_counter()
    projection.step()
    phases['step'] = time.perf_counter() - start
    phases['total'] = sum(phases.values())
    if hasattr(projection, 'remove_hooks'):
        projection.remove_hooks()
    return phases


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_dict(dict(model=args.model, input_size=[3, 64, 32], embed_dim=None, batch_size=4,
                                widths=sorted(WIDTHS)))
    torch.manual_seed(0)
    net = create_model(cfg, 751).train()
    shared = shared_params(net)
    images = torch.randn(4, 3, 64, 32)
    grads: List[List[Optional[torch.Tensor]]] = []
    for width in WIDTHS:
        net.zero_grad(set_to_none=True)
        with net.width(width):
            net(images).square().mean().backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in shared])
    supports = width_gradient_supports(net, WIDTHS)
    makers = {'current': lambda inner: GradientProjection(inner, shared, len(WIDTHS), supports=supports,
                                                          generator=torch.Generator().manual_seed(0))}
    if args.reference is not None:
        reference = load_reference(args.reference)
        makers['reference'] = lambda inner: reference(inner, shared, len(WIDTHS),
                                                      generator=torch.Generator().manual_seed(0))
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in makers}
    load_before = os.getloadavg()
    for round_ in range(args.repeats + 1):
        for name, make in makers.items():
            phases = time_phases(make, net, shared, grads)
            if round_ > 0:
                runs[name].append(phases)
    median = {name: {phase: statistics.median(r[phase] for r in rs) for phase in rs[0]} for name, rs in runs.items()}
    for name, phases in median.items():
        print(f'{name:<10} ' + ', '.join(f'{phase} {seconds:.3f} s' for phase, seconds in phases.items()))
    if 'reference' in median:
        print(f'current / reference = {median["current"]["total"] / median["reference"]["total"]:.2f}')
    result = dict(benchmark='gradient_bookkeeping', model=args.model, widths=list(WIDTHS),
                  shared_params=sum(p.numel() for p in shared), threads=torch.get_num_threads(),
                  repeats=args.repeats, reference=str(args.reference) if args.reference else None, median_s=median,
                  runs=runs, load_average=dict(before=load_before, after=os.getloadavg()))
    output = args.output or Path(__file__).resolve().parents[1] / 'results' / 'perf' / 'gradient_bookkeeping.json'
    write_json_atomically(output, result)
    print(f'wrote {output}')


if __name__ == '__main__':
    main()
