""" What each speed lever does to the main job's training step, measured side by side in one process.

The main job is `make run`: `recipes/sfsc_resnet18_fashion_mnist.yaml` (a switchable ResNet-18 at 32x32, batch 64,
four widths). Every lever is timed on the trainer's own step (forwards, losses, one backward per width, the gradient
projection, the optimizer step) in interleaved rounds, one step of each lever in turn, so that load from other
processes hits them alike; medians are reported against the default step, as a ratio (below 1: the lever pays):

* ``threads_1``: one intra-op thread instead of the two cores (``torch.set_num_threads``);
* ``no_onednn``: oneDNN (mkldnn) convolutions off, ATen's own kernels instead;
* ``channels_last``: the network and the batch in channels-last memory format;
* ``compiled``: ``torch.compile`` of the backbone's forward (one graph per width: dynamo guards on the width), with
  the compile time reported apart;
* ``loader_workers_N``: the default step fed by the recipe's own training loader with N worker processes instead
  of a fixed batch: what reading, augmenting and collating the images adds to a step.

The C allocator's setting (``sfsc_timm/train/host_allocator.py``) is applied, as `sfsc-timm train` does; its own effect
is measured by ``benchmarks/perf/train_step.py --main-job`` against ``--default-allocator``. JSON to
``benchmarks/results/perf/main_job_levers.json``.

    python benchmarks/perf/main_job_levers.py                 # about 5 minutes on 2 cores, most of it compiling
    python benchmarks/perf/main_job_levers.py --skip-compile  # about 2 minutes
"""
import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import torch

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.train.config import config_from_dict, load_recipe
from sfsc_timm.train.data import build_train_data, load_dataset, split_training_data
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.host_allocator import keep_freed_memory
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.trainer import create_model

MAIN_JOB_RECIPE = Path(__file__).resolve().parents[2] / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'
PAYS_BELOW = 0.97  # a lever pays when its median step is at least 3% below the default step's


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=8, help='timed rounds (after one warm-up round)')
    parser.add_argument('--skip-compile', action='store_true', help='leave out torch.compile (minutes to compile)')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2], help='loader worker counts to time')
    parser.add_argument('--output', type=Path,
                        default=Path(__file__).resolve().parents[1] / 'results' / 'perf' / 'main_job_levers.json')
    return parser.parse_args()


def make_step(cfg, num_classes: int, channels_last: bool = False):
    """The trainer's step of a fresh, identically seeded network."""
    torch.manual_seed(cfg.seed)
    net = create_model(cfg, num_classes).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return create_train_step(cfg, net, DistInfo())


def with_threads(run: Callable[[], None], threads: int) -> Callable[[], None]:
    def timed() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            run()
        finally:
            torch.set_num_threads(before)
    return timed


def without_onednn(run: Callable[[], None]) -> Callable[[], None]:
    def timed() -> None:
        with torch.backends.mkldnn.flags(enabled=False):
            run()
    return timed


def batches_forever(loader) -> Iterator:
    epoch = 0
    while True:
        if hasattr(loader.sampler, 'set_epoch'):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def main() -> None:
    args = parse_args()
    allocator = 'keeps freed memory' if keep_freed_memory() else 'default (settings not applied)'
    recipe = load_recipe(MAIN_JOB_RECIPE)
    recipe.pop('device', None)
    cfg = config_from_dict(dict(recipe, progress=False))
    data = load_dataset(cfg)
    split = split_training_data(cfg, data)
    num_classes = split.num_classes

    default_step = make_step(cfg, num_classes)
    images = torch.randn(cfg.batch_size, *cfg.input_size)
    labels = torch.randint(0, num_classes, (cfg.batch_size,))
    last_images = images.contiguous(memory_format=torch.channels_last)
    cl_step = make_step(cfg, num_classes, channels_last=True)

    variants: Dict[str, Callable[[], None]] = {
        'default': lambda: default_step(images, labels, 1.0),
        'threads_1': with_threads(lambda: default_step(images, labels, 1.0), 1),
        'no_onednn': without_onednn(lambda: default_step(images, labels, 1.0)),
        'channels_last': lambda: cl_step(last_images, labels, 1.0),
    }
    compile_s = None
    if not args.skip_compile:
        compiled_step = make_step(cfg, num_classes)
        net = compiled_step.net
        net.forward_features = torch.compile(net.forward_features)
        start = time.perf_counter()
        compiled_step(images, labels, 1.0)  # every width's forward and backward graph compiled here
        compile_s = time.perf_counter() - start
        variants['compiled'] = lambda: compiled_step(images, labels, 1.0)
    for workers in args.workers:
        loader = build_train_data(dataclasses.replace(cfg, workers=workers), data, split, default_step.net,
                                  DistInfo()).loader
        feed = batches_forever(loader)

        def fed(feed=feed) -> None:
            batch_images, batch_labels, _, _ = next(feed)  # images, labels, cameras, ids, as the trainer reads them
            default_step(batch_images, batch_labels, 1.0)
        next(feed)  # starts the workers outside the timed rounds
        variants[f'loader_workers_{workers}'] = fed

    times: Dict[str, List[float]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    for round_ in range(args.repeats + 1):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
        print(f'round {round_}/{args.repeats}: ' + ', '.join(f'{n} {t[-1]:.3f}s' for n, t in times.items() if t),
              flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = {name: median[name] / median['default'] for name in median}
    print(f'\nmain job step ({cfg.model}, {cfg.method}, batch {cfg.batch_size}, {cfg.input_size[1]}x'
          f'{cfg.input_size[2]}), {torch.get_num_threads()} threads, {args.repeats} rounds, allocator: {allocator}')
    print(f'{"lever":<18} {"median s":>9} {"vs default":>11}  pays (target: below {PAYS_BELOW})')
    for name in variants:
        pays = '' if name == 'default' else 'yes' if ratio[name] < PAYS_BELOW else 'no'
        print(f'{name:<18} {median[name]:9.3f} {ratio[name]:11.3f}  {pays}')
    if compile_s is not None:
        print(f'torch.compile: {compile_s:.0f} s to compile the four widths before the first step')
    result = dict(
        benchmark='main_job_levers', recipe=MAIN_JOB_RECIPE.name, model=cfg.model, method=cfg.method,
        batch_size=cfg.batch_size, input_size=list(cfg.input_size), widths=list(cfg.widths), repeats=args.repeats,
        threads=torch.get_num_threads(), allocator=allocator, median_s=median, ratio_to_default=ratio,
        times_s=times, compile_s=compile_s,
        pays={name: ratio[name] < PAYS_BELOW for name in ratio if name != 'default'},
        load_average=dict(before=load_before, after=os.getloadavg()),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__),
        note='interleaved rounds; a lever pays when its median step is at least 3% below the default')
    write_json_atomically(args.output, result)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
