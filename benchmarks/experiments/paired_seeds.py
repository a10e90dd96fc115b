""" Two rows of the paper table compared seed by seed, over every run that several table folders hold.

Runs of one seed share their data order, initialisation and evaluation subset, so the per-seed difference between
two rows is what a change of method does, and its spread over seeds is the run-to-run noise. For each quantity
(φ→φ, the mean of the matrix, the diagonal and cross-width means and their gap, the φ_1/16 row on the full-width
gallery minus its own gallery, each width's own-gallery mAP) this prints both rows' means, the per-seed differences,
their mean ± standard deviation, and an exact sign-flip test: the share of the 2^n ways of flipping the differences'
signs whose mean is at least as large as the one observed (one-sided, "row A above row B").
It trains nothing; `paper_table.py` does::

    .venv/bin/python benchmarks/experiments/paired_seeds.py sfsc_ce_ens bct_s \\
        --folders benchmarks/results/experiments/open_set

The comparison goes into the table's one JSON of pairs, ``FOLDER/paired_seeds.json`` of the first folder (or
``--output``), under the key ``<A>_vs_<B>``, with the seeds, every per-seed difference and the command that made it;
the other pairs already there are kept, and the file is replaced atomically.
"""
import argparse
import itertools
import json
import operator
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.eval import diagonal_and_cross_width_means

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the experiments' shared helpers, however this is loaded
from _runs import seed_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PAIRS_FILE = 'paired_seeds.json'  # in the table's folder: pair key -> comparison

# quantity -> its value (mAP %) from one run's compatibility matrix (widths ascending)
QUANTITIES: Dict[str, Callable[[torch.Tensor], float]] = {
    'full_width': lambda m: float(m[-1, -1]),
    'mean_of_matrix': lambda m: float(m.mean()),
    'diagonal_mean': lambda m: diagonal_and_cross_width_means(m)[0],
    'cross_mean': lambda m: diagonal_and_cross_width_means(m)[1],
    'gap': lambda m: operator.sub(*diagonal_and_cross_width_means(m)),
    'narrowest_to_full_gallery_gain': lambda m: float(m[0, -1] - m[0, 0]),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('row_a', help='a row of benchmarks/experiments/paper_table.py, e.g. sfsc_ce_ens')
    parser.add_argument('row_b', help='the row it is compared with, e.g. bct_s')
    parser.add_argument('--folders', nargs='+', type=Path, required=True,
                        help='paper_table.py output folders (their runs/ROW/seed_S/export/metrics.json are read)')
    parser.add_argument('--output', type=Path, default=None,
                        help=f'the JSON of pairs to update (default: the first folder\'s {PAIRS_FILE})')
    return parser.parse_args()


def matrices(row: str, folders: List[Path]) -> Dict[int, torch.Tensor]:
    """seed -> the run's compatibility matrix (mAP %); a seed found in two folders is an error (which is meant?)."""
    return {seed: torch.tensor(json.loads((run / 'export' / 'metrics.json').read_text())['matrix'],
                               dtype=torch.float64) * 100
            for seed, run in seed_runs(folders, row, 'export/metrics.json').items()}


def sign_flip_p_value(differences: List[float]) -> float:
    """One-sided exact p-value of ``mean(differences) > 0`` under the null of symmetric differences around 0."""
    observed = sum(differences)
    flips = list(itertools.product((1, -1), repeat=len(differences)))
    return sum(sum(s * d for s, d in zip(signs, differences)) >= observed - 1e-12 for signs in flips) / len(flips)


def compare(a: Dict[int, torch.Tensor], b: Dict[int, torch.Tensor]) -> Dict:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise SystemExit(f'the two rows share {len(seeds)} seed(s); paired comparison needs at least 2.')
    out = dict(seeds=seeds, quantities={})
    num_widths = a[seeds[0]].shape[0]
    # each width's own-gallery mAP (widths ascending: 1 is the narrowest), what the goal's diagonal part compares
    by_width = {f'own_gallery_{i + 1}_of_{num_widths}': (lambda m, i=i: float(m[i, i])) for i in range(num_widths)}
    for name, value in {**QUANTITIES, **by_width}.items():
        va, vb = [value(a[s]) for s in seeds], [value(b[s]) for s in seeds]
        diffs = [x - y for x, y in zip(va, vb)]
        out['quantities'][name] = dict(
            a_mean=statistics.mean(va), a_std=statistics.stdev(va), b_mean=statistics.mean(vb),
            b_std=statistics.stdev(vb), differences=diffs, difference_mean=statistics.mean(diffs),
            difference_std=statistics.stdev(diffs), seeds_a_above=sum(d > 0 for d in diffs),
            p_a_above=sign_flip_p_value(diffs))
    return out


def pair_key(row_a: str, row_b: str) -> str:
    """The key of a comparison in a table's JSON of pairs."""
    return f'{row_a}_vs_{row_b}'


def record_pair(output: Path, result: Dict) -> Dict[str, Dict]:
    """Put ``result`` under its pair's key in the JSON of pairs ``output`` (the other pairs kept), atomically.

    Returns:
        Every pair the file now holds, by key.
    """
    pairs = json.loads(output.read_text()) if output.is_file() else {}
    pairs[pair_key(result['row_a'], result['row_b'])] = result
    write_json_atomically(output, dict(sorted(pairs.items())))
    return pairs


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (what the recorded command quotes)."""
    path = path if path.is_absolute() else Path.cwd() / path
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> int:
    args = parse_args()
    folders = [f if f.is_absolute() else Path.cwd() / f for f in args.folders]
    result = compare(matrices(args.row_a, folders), matrices(args.row_b, folders))
    shown = [_shown(f) for f in folders]
    command = ' '.join(['.venv/bin/python benchmarks/experiments/paired_seeds.py', args.row_a, args.row_b,
                        '--folders', *shown] + (['--output', _shown(args.output)] if args.output else []))
    result = dict(row_a=args.row_a, row_b=args.row_b, folders=shown, command=command, **result)
    print(f'{args.row_a} against {args.row_b}, seeds {result["seeds"]} (mAP %, A - B per seed)')
    for name, q in result['quantities'].items():
        print(f'{name:32s} {q["a_mean"]:6.2f} ± {q["a_std"]:.2f}  {q["b_mean"]:6.2f} ± {q["b_std"]:.2f}  '
              f'diff {q["difference_mean"]:+.2f} ± {q["difference_std"]:.2f}  A above in {q["seeds_a_above"]}/'
              f'{len(result["seeds"])}  p(A > B) = {q["p_a_above"]:.3f}  '
              f'[{", ".join(f"{d:+.2f}" for d in q["differences"])}]')
    output = args.output or folders[0] / PAIRS_FILE
    record_pair(output, result)
    print(f'written to {output} ({pair_key(args.row_a, args.row_b)})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
