"""The SFSC paper's comparison table, reproduced: every method trained with one backbone and budget, each method's
full compatibility matrix, the table in the paper's layout (Markdown + JSON) and one heatmap per method.

Runs are resumable: each (method, seed) run lives in OUTPUT/runs/METHOD/seed_S and is skipped once exported, so a
second invocation with more seeds or methods adds to the same table.

    .venv/bin/python benchmarks/paper_table.py                              # every method, seed 0 (CPU defaults)
    .venv/bin/python benchmarks/paper_table.py --seeds 0 1 2 --methods sfsc bct_s asymmetric_s independent

CPU defaults (sized to finish all eight methods for one seed well inside 90 minutes on a 2-core CPU):
sfsc_resnet18 at 32x32, widths 0.25/0.5/0.75/1.0, D=128, 3,000 Fashion-MNIST training images, 4 epochs per model
(the staged baselines bct / asymmetric train the full model, then the narrower ones: 4 epochs each), evaluation on a
class-balanced half of the test split: 500 queries (50 per class) / 4,500 gallery images.
With a GPU (or --setting gpu): sfsc_resnet50 at 256x128 on the full 60,000 training images for 30 epochs per model.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from sfsc_timm.atomic_io import write_json_atomically, write_text_atomically
from sfsc_timm.eval import format_compatibility_table, parameter_share_label, plot_compatibility_heatmap

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'
METHODS = ['independent', 'sfsc', 'bct_s', 'asymmetric_s', 'bct', 'asymmetric', 'sfsc_no_proj', 'sfsc_no_unc']
LABELS = {'independent': 'Unified Model (independent)', 'sfsc': 'Ours (SFSC)', 'bct_s': 'BCT-S',
          'asymmetric_s': 'Asymmetric-S', 'bct': 'BCT', 'asymmetric': 'Asymmetric',
          'sfsc_no_proj': 'SFSC w/o projection', 'sfsc_no_unc': 'SFSC w/o uncertainty loss'}
SETTINGS = {
    'cpu': ['--model', 'sfsc_resnet18', '--input-size', '3', '32', '32', '--embed-dim', '128', '--max-train', '3000',
            '--epochs', '4', '--batch-size', '64', '--eval-every', '100', '--eval-max-query', '500',
            '--eval-max-gallery', '4500'],
    'gpu': ['--model', 'sfsc_resnet50', '--input-size', '3', '256', '128', '--embed-dim', '2048', '--max-train', 'none',
            '--epochs', '30', '--batch-size', '64', '--eval-every', '100', '--workers', '8'],
}
# (query width, gallery width) columns of the paper's table
PAPER_COLUMNS = [(0.25, 0.25), (0.25, 1.0), (0.5, 0.5), (0.75, 0.75), (1.0, 1.0)]


def run_one(method: str, seed: int, folder: Path, setting: List[str], extra: List[str],
            threads: Optional[int] = None) -> Dict:
    metrics_file = folder / 'export' / 'metrics.json'
    if not metrics_file.is_file():
        command = [sys.executable, '-m', 'sfsc_timm.train', '-c', str(RECIPE), *setting, '--method', method,
                   '--seed', str(seed), '--output', str(folder), '--no-progress', *extra]
        if (folder / 'checkpoints' / 'last').is_dir():
            command += ['--resume', str(folder)]
        print(f'--- {method} seed {seed}: {" ".join(command[1:])}', flush=True)
        start = time.time()
        env = dict(os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads else {}))
        subprocess.run(command, check=True, cwd=REPO, env=env)
        write_text_atomically(folder / 'seconds.txt', f'{time.time() - start:.1f}\n')
    metrics = json.loads(metrics_file.read_text())
    seconds = folder / 'seconds.txt'
    metrics['seconds'] = float(seconds.read_text()) if seconds.is_file() else None
    return metrics


def mean_std(values: List[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def build_table(results: Dict[str, Dict[int, Dict]]) -> Dict:
    rows = {}
    for method, by_seed in results.items():
        runs = list(by_seed.values())
        widths = runs[0]['widths']
        index = {w: i for i, w in enumerate(widths)}
        matrices = torch.tensor([r['matrix'] for r in runs])
        rows[method] = dict(
            label=LABELS[method], seeds=sorted(by_seed), widths=widths,
            mean_matrix=matrices.mean(0).tolist(),
            std_matrix=(matrices.std(0) if len(runs) > 1 else torch.zeros_like(matrices[0])).tolist(),
            columns={f'{q:g}->{g:g}': mean_std([r['matrix'][index[q]][index[g]] for r in runs])
                     for q, g in PAPER_COLUMNS},
            mean_of_matrix=mean_std([r['summary']['mean'] for r in runs]),
            self_compatible_runs=sum(bool(r['summary']['self_compatible']) for r in runs),
            violations=[r['summary']['violations'] for r in runs],
            seconds=[r.get('seconds') for r in runs])
    return rows


def markdown(rows: Dict) -> str:
    header = ['method', *(f'{parameter_share_label(q)}→{parameter_share_label(g)}' for q, g in PAPER_COLUMNS),
              'mean of matrix', 'self-compatible', 'seeds']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in rows.values():
        cells = [row['label'], *(row['columns'][f'{q:g}->{g:g}'] for q, g in PAPER_COLUMNS), row['mean_of_matrix'],
                 f'{row["self_compatible_runs"]}/{len(row["seeds"])}', ','.join(map(str, row['seeds']))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--methods', nargs='+', default=METHODS, choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--setting', choices=sorted(SETTINGS), default='gpu' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--output', type=Path, default=REPO / 'benchmarks' / 'results' / 'paper_table')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads per training run (OMP_NUM_THREADS); 1 avoids thread oversubscription '
                             'when other jobs share the CPU')
    parser.add_argument('extra', nargs=argparse.REMAINDER, help='more trainer overrides after --, e.g. -- --lr 0.05')
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ['--'] else args.extra
    start = time.time()
    for method in args.methods:
        for seed in args.seeds:
            run_one(method, seed, args.output / 'runs' / method / f'seed_{seed}', SETTINGS[args.setting], extra,
                    args.threads)
    # the table covers every finished run under OUTPUT, so separate invocations add up
    results: Dict[str, Dict[int, Dict]] = {}
    for method in METHODS:
        for folder in sorted((args.output / 'runs' / method).glob('seed_*')):
            if (folder / 'export' / 'metrics.json').is_file():
                results.setdefault(method, {})[int(folder.name[5:])] = run_one(method, 0, folder, [], [])
    rows = build_table(results)
    table = markdown(rows)
    for method, row in rows.items():
        plot_compatibility_heatmap(row['mean_matrix'], row['widths'], args.output / f'{method}.png',
                                   title=f'{row["label"]}: mAP (%), mean of seeds {row["seeds"]}')
    payload = dict(setting=args.setting, setting_args=SETTINGS[args.setting], extra=extra, threads=args.threads,
                   rows=rows, table_markdown=table, seconds_this_invocation=time.time() - start)
    write_json_atomically(args.output / 'paper_table.json', payload)
    write_text_atomically(args.output / 'paper_table.md', table + '\n')
    print(table)
    for method, row in rows.items():
        print(f'\n{row["label"]} (mean over seeds {row["seeds"]}), mAP %:\n'
              + format_compatibility_table(row['mean_matrix'], row['widths']))
    print(f'\n{time.time() - start:.0f} s in this invocation; wrote {args.output}/paper_table.{{json,md}} and heatmaps')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
