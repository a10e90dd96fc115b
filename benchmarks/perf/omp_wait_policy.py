""" The main job's step under OpenMP's wait policies, alone and beside another busy process, side by side.

torch's CPU kernels run on an OpenMP thread pool whose idle threads spin before they sleep (GNU OpenMP's default
``OMP_WAIT_POLICY``). On a machine with as many busy threads as cores, a second process that also spins (a test run, a
second training, the paper table's jobs) leaves each waiting for threads that the other holds, and small kernels such
as the main job's wait far longer than they compute. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once.
The policy is read when the OpenMP runtime starts, so each measurement is its own process: one worker times
``--steps`` of the main job's step (``recipes/sfsc_resnet18_fashion_mnist.yaml``) after one warm-up step, and
rounds interleave the four cases (policy default / passive, alone / beside a copy of the same worker under the same
policy) so that other load hits them alike. Medians of the per-step times; JSON to
``benchmarks/results/perf/omp_wait_policy.json``.

    python benchmarks/perf/omp_wait_policy.py   # about 4 minutes on 2 cores, most of it the default policy beside
                                                # another process
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / 'benchmarks' / 'results' / 'perf' / 'omp_wait_policy.json'
POLICIES = ('default', 'passive')


def worker(steps: int) -> None:
    """Time `steps` main-job steps after one warm-up step; print the per-step seconds as JSON."""
    import torch

    from sfsc_timm.train.config import config_from_dict, load_recipe
    from sfsc_timm.train.distributed import DistInfo
    from sfsc_timm.train.host_allocator import keep_freed_memory
    from sfsc_timm.train.methods import create_train_step
    from sfsc_timm.train.trainer import create_model
    keep_freed_memory()  # as `sfsc-timm train` runs
    cfg = config_from_dict(load_recipe(REPO / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'))
    torch.manual_seed(0)
    step = create_train_step(cfg, create_model(cfg, 10).train(), DistInfo())
    images, labels = torch.randn(cfg.batch_size, *cfg.input_size), torch.arange(cfg.batch_size) % 10
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step(images, labels, epoch=0.0)
        if i:
            times.append(time.perf_counter() - start)
    print(json.dumps(times))


def _launch(policy: str, steps: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    if policy == 'passive':
        env['OMP_WAIT_POLICY'] = 'PASSIVE'
    return subprocess.Popen([sys.executable, __file__, '--worker', '--steps', str(steps)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def _times(process: subprocess.Popen) -> List[float]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f'a worker failed (exit {process.returncode})')
    return json.loads(out.strip().splitlines()[-1])


def measure(policy: str, beside: bool, steps: int) -> List[float]:
    """Per-step seconds of one worker, alone or with a second worker of the same policy running beside it."""
    processes = [_launch(policy, steps) for _ in range(2 if beside else 1)]
    results = [_times(p) for p in processes]
    return results[0] + (results[1] if beside else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--rounds', type=int, default=2, help='interleaved rounds of the four cases')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per worker')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--output', type=Path, default=RESULT)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return 0
    sys.path.insert(0, str(REPO))
    from sfsc_timm.atomic_io import write_json_atomically
    cases = [(policy, beside) for beside in (False, True) for policy in POLICIES]
    times: Dict[str, List[float]] = {f'{p}_{"beside" if b else "alone"}': [] for p, b in cases}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for policy, beside in cases:
            name = f'{policy}_{"beside" if beside else "alone"}'
            times[name] += measure(policy, beside, args.steps)
            print(f'round {round_ + 1}/{args.rounds} {name}: median {statistics.median(times[name]):.3f} s', flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = dict(passive_over_default_alone=median['passive_alone'] / median['default_alone'],
                  passive_over_default_beside=median['passive_beside'] / median['default_beside'],
                  beside_over_alone_default=median['default_beside'] / median['default_alone'],
                  beside_over_alone_passive=median['passive_beside'] / median['passive_alone'])
    print('\ncase              median step s')
    for name, value in median.items():
        print(f'{name:18s}{value:10.3f}')
    for name, value in ratios.items():
        print(f'{name} = {value:.3f}')
    print(f'passive alone costs {ratios["passive_over_default_alone"]:.3f}x the default (a lever pays alone below '
          f'1.03x); beside another process it takes {ratios["passive_over_default_beside"]:.3f}x the default')
    write_json_atomically(args.output, dict(
        benchmark='omp_wait_policy', recipe='sfsc_resnet18_fashion_mnist.yaml', rounds=args.rounds, steps=args.steps,
        median_s=median, ratios=ratios, times_s=times,
        load_average=dict(before=load_before, after=os.getloadavg()),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count()),
        command=f'python benchmarks/perf/omp_wait_policy.py --rounds {args.rounds} --steps {args.steps}'))
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
