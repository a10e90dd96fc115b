"""The SFSC paper's comparison table, reproduced: every method trained with one backbone and budget, each method's
full compatibility matrix, the table in the paper's layout (Markdown + JSON) and one heatmap per method.

Four benchmarks (``--benchmark``), each with its own CPU setting and output folder under
``benchmarks/results/experiments/``:

* ``fashion_mnist`` (closed-set: the 10 classes trained on are the ones retrieved), ``paper_table``;
* ``fashion_mnist_open`` (train on classes 0-4, retrieve among 5-9), ``open_set_fashion``;
* ``glyphs`` (glyph re-identification: 672 unseen characters, typefaces as cameras), ``glyphs_scratch`` (the first
  tables, whose ``sfsc`` row is the first reading, are in ``open_set`` and ``open_set_6_epochs``);
* ``glyphs_pretrained``: the same, every run fine-tuned from the glyph stand-in for ImageNet weights
  (``benchmarks/experiments/glyph_standin.py``, built on first use), ``glyphs_pretrained``.

Runs are resumable: each (method, seed) run lives in OUTPUT/runs/METHOD/seed_S and is skipped once exported (a
killed run resumes from its last checkpoint), so a second invocation with more seeds or methods adds to the table:
one folder, and one ``paper_table.json``, per table, whatever the number of invocations.
Each run's ``export/metrics.json`` and ``timing.json`` are kept in git (the rest of the run folder is not), so the
table and ``paired_seeds.py`` rebuild from any checkout. Rows whose runs a folder no longer holds (the first glyph
tables kept none) are not dropped when the table is rewritten: they move to its ``archived_batches``.
``--jobs 2`` trains two runs at once, one thread each, which uses a 2-core machine better than one run on both.

    .venv/bin/python benchmarks/experiments/paper_table.py --benchmark glyphs --jobs 2 --seeds 0 1 2 \\
        --methods sfsc bct_s ...
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from sfsc_timm.atomic_io import write_json_atomically, write_text_atomically
from sfsc_timm.eval import (
    format_compatibility_table, parameter_share_label, plot_compatibility_heatmap, summarize_compatibility,
)

REPO = Path(__file__).resolve().parents[2]
# the trainer with the tables' presets registered (methods.py); it starts from the recipe keys' defaults, which are
# the main job's data, model and schedule, and never from the main recipe, whose `sfsc:` block would change `sfsc`
TRAIN = Path(__file__).resolve().parent / 'train.py'
# the settings of the first reading, which `sfsc`'s ablations (sfsc_no_proj, sfsc_no_unc) take to ablate it instead
FIRST_READING = ['--widest-loss', 'uncertainty', '--kl-coef', '1', '--kl-anneal-epochs', '10', '--priority',
                 'uncertainty', '--gradient-merge', 'sum']
# row name -> (trainer method, extra trainer arguments, label). The first eight are the SFSC paper's table (`sfsc` as
# the public reference implements it, docs/design.md); sfsc_exp and the sfsc_ce family are this project's open-set
# remedies, their ablations change one of their settings each.
ROWS: Dict[str, Tuple[str, List[str], str]] = {
    'independent': ('independent', [], 'Unified Model (independent)'),
    'sfsc': ('sfsc', [], "Ours (SFSC, the public reference's loss and projection)"),
    'bct_s': ('bct_s', [], 'BCT-S'),
    'asymmetric_s': ('asymmetric_s', [], 'Asymmetric-S'),
    'bct': ('bct', [], 'BCT'),
    'asymmetric': ('asymmetric', [], 'Asymmetric'),
    'sfsc_no_proj': ('sfsc_no_proj', [], 'SFSC w/o projection'),
    # cross-entropy at every width, projected, merged by the mean: what the reference's own SFSC commands train
    # (SNET.USE_SFSC_LOSS False)
    'sfsc_no_unc': ('sfsc_no_unc', [], "SFSC w/o uncertainty loss (the reference's commands)"),
    # the project's first reading of the SFSC paper (the `sfsc` row of the first tables) and its two ablations, and
    # each of the four points where the public reference differs from it, undone one at a time on `sfsc`
    'sfsc_first_reading': ('sfsc_first_reading', [], 'SFSC, our first reading of the paper'),
    'sfsc_first_reading_no_proj': ('sfsc_no_proj', FIRST_READING, 'SFSC (first reading) w/o projection'),
    'sfsc_first_reading_no_unc': ('sfsc_no_unc', FIRST_READING[-2:], 'SFSC (first reading) w/o uncertainty loss'),
    'sfsc_widest_unc': ('sfsc', ['--widest-loss', 'uncertainty'], 'SFSC, the widest width on the uncertainty loss'),
    'sfsc_kl_annealed': ('sfsc', ['--kl-coef', '1', '--kl-anneal-epochs', '10'],
                         'SFSC, KL weight 1 reached after 10 epochs'),
    'sfsc_unc_priorities': ('sfsc', ['--priority', 'uncertainty'], 'SFSC with uncertainty priorities'),
    'sfsc_sum_merge': ('sfsc', ['--gradient-merge', 'sum'], 'SFSC, projected gradients summed'),
    'sfsc_exp': ('sfsc_exp', [], 'SFSC-exp (exp evidence, no KL)'),
    'sfsc_exp_softplus': ('sfsc_exp', ['--evidence', 'softplus'], 'SFSC-exp with softplus evidence'),
    'sfsc_exp_kl': ('sfsc_exp', ['--kl-coef', '1'], 'SFSC-exp with the KL term'),
    'sfsc_exp_no_proj': ('sfsc_no_proj', [*FIRST_READING[:2], '--evidence', 'exp', '--kl-coef', '0',
                                          *FIRST_READING[4:]], 'SFSC-exp w/o projection'),
    'sfsc_exp_uniform': ('sfsc_exp', ['--priority', 'uniform'], 'SFSC-exp with uniform priorities'),
    'sfsc_ipd': ('sfsc_ipd', [], 'SFSC-exp + in-place distillation'),
    # sfsc_ce: the open-set remedy the recipes use, four of the goal's five parts met (docs/open_set.md); its
    # ablations change one setting each.
    # The rows sfsc_ce_kd1 and sfsc_ce_kd03 were trained by interim registrations of the same loss (their runs'
    # config names the methods sfsc_ce_kd and sfsc_ce_kd03: sfsc_ce with lambda_kd 1 and 0.3)
    'sfsc_ce': ('sfsc_ce', [], 'SFSC-CE (cross-entropy, uncertainty priorities, posterior distillation)'),
    'sfsc_ce_no_kd': ('sfsc_ce', ['--lambda-kd', '0'], 'SFSC-CE w/o distillation'),
    'sfsc_ce_kd03': ('sfsc_ce', ['--lambda-kd', '0.3'], 'SFSC-CE, distillation weight 0.3'),
    'sfsc_ce_kd1': ('sfsc_ce', ['--lambda-kd', '1'], 'SFSC-CE, distillation weight 1'),
    'sfsc_ce_ipd': ('sfsc_ce', ['--lambda-kd', '0', '--lambda-align', '1'],
                    'SFSC-CE, embedding regression instead of distillation'),
    'sfsc_ce_uniform': ('sfsc_ce', ['--priority', 'uniform'], 'SFSC-CE with uniform priorities'),
    'sfsc_ce_relative': ('sfsc_ce', ['--priority', 'relative'], 'SFSC-CE, priorities relative to the widest width'),
    # sfsc_ce_ens: the ensemble of all widths as the distillation teacher, priorities relative to the widest width
    'sfsc_ce_ens': ('sfsc_ce_ens', [], 'SFSC-CE-ens (ensemble distillation, priorities relative to the widest)'),
    'sfsc_ce_ens_seed_priorities': ('sfsc_ce_ens', ['--priority', 'uncertainty'],
                                    "SFSC-CE-ens with the SFSC paper's priorities"),
    'sfsc_ce_ens_t3': ('sfsc_ce_ens', ['--kd-temperature', '3'], 'SFSC-CE-ens, distillation at temperature 3'),
    'sfsc_ce_ens_kd1': ('sfsc_ce_ens', ['--lambda-kd', '1'], 'SFSC-CE-ens, distillation weight 1'),
    'sfsc_ce_ens_layer': ('sfsc_ce_ens', ['--projection-granularity', 'layer'],
                          'SFSC-CE-ens, the projection decided per layer'),
    # the normalised (cosine) classifier, on the remedy and, as its control, on BCT-S: is a gain the method's or the
    # classifier's?
    'sfsc_ce_ens_cos': ('sfsc_ce_ens', ['--classifier', 'cosine'], 'SFSC-CE-ens with the cosine classifier'),
    'bct_s_cos': ('bct_s', ['--classifier', 'cosine'], 'BCT-S with the cosine classifier'),
    # ... at CosFace's scale 64 (Wang et al. 2018): is the scale 20 what holds the cosine classifier back?
    'sfsc_ce_ens_cos64': ('sfsc_ce_ens', ['--classifier', 'cosine', '--classifier-scale', '64'],
                          'SFSC-CE-ens with the cosine classifier, scale 64'),
    'bct_s_cos64': ('bct_s', ['--classifier', 'cosine', '--classifier-scale', '64'],
                    'BCT-S with the cosine classifier, scale 64'),
    # the cross-width triplet (anchors of one width, positives and negatives of another), on the remedy and, as its
    # control, on BCT-S: the narrower widths against the widest width's detached embeddings (to_widest), or every
    # pair both ways (mutual)
    'sfsc_ce_ens_xtri': ('sfsc_ce_ens', ['--lambda-cross-tri', '1'],
                         'SFSC-CE-ens + cross-width triplet to the widest width'),
    'bct_s_xtri': ('bct_s', ['--lambda-cross-tri', '1'], 'BCT-S + cross-width triplet to the widest width'),
    # ... with the cross-width triplet in place of the posterior distillation: does the distillation cost the full
    # width what the triplet gives BCT-S's?
    'sfsc_ce_ens_xtri_no_kd': ('sfsc_ce_ens', ['--lambda-cross-tri', '1', '--lambda-kd', '0'],
                               'SFSC-CE-ens + cross-width triplet, without distillation'),
    'sfsc_ce_ens_xtri_uniform': ('sfsc_ce_ens', ['--lambda-cross-tri', '1', '--priority', 'uniform'],
                                 'SFSC-CE-ens + cross-width triplet, uniform priorities'),
    # ... and the embedding regression onto the widest width in its place: alignment alone, without the ranking
    'sfsc_ce_ens_align': ('sfsc_ce_ens', ['--lambda-align', '1'],
                          'SFSC-CE-ens + embedding regression to the widest width'),
    'sfsc_ce_ens_xtri_mutual': ('sfsc_ce_ens', ['--lambda-cross-tri', '1', '--cross-tri-direction', 'mutual'],
                                'SFSC-CE-ens + mutual cross-width triplet'),
    # the asymmetric baselines as embedding regression (no labels), what asymmetric / asymmetric_s were before they
    # became Budnik & Avrithis's asymmetric metric learning. Runs exported before that change belong to these rows:
    # move OUTPUT/runs/asymmetric to runs/asymmetric_reg and runs/asymmetric_s to runs/asymmetric_s_reg, or they are
    # reused as the new rows' runs
    'asymmetric_reg': ('asymmetric_reg', [], 'Asymmetric (embedding regression)'),
    'asymmetric_s_reg': ('asymmetric_s_reg', [], 'Asymmetric-S (embedding regression)'),
}
METHODS = list(ROWS)[:8]  # the default: the SFSC paper's table
_CPU_FASHION = ['--model', 'sfsc_resnet18', '--input-size', '3', '32', '32', '--embed-dim', '128',
                '--max-train', '3000', '--epochs', '4', '--batch-size', '64', '--eval-every', '100',
                '--eval-max-query', '500', '--eval-max-gallery', '4500']
_GPU = ['--model', 'sfsc_resnet50', '--input-size', '3', '256', '128', '--embed-dim', '2048', '--max-train', 'none',
        '--epochs', '30', '--batch-size', '64', '--eval-every', '100', '--workers', '8']
_CPU_GLYPHS = ['--model', 'sfsc_resnet10t', '--input-size', '3', '32', '32', '--embed-dim', '128', '--max-train',
               '8000', '--epochs', '3', '--batch-size', '64', '--eval-every', '100', '--val-max-query', '150',
               '--val-max-gallery', '1000', '--eval-max-query', '700', '--eval-max-gallery', '6000']
# benchmark -> dataset, output folder, trainer arguments of each setting (the first tables of the glyph benchmark,
# 79 runs, are in benchmarks/results/experiments/open_set*: their `sfsc` row is the first reading)
BENCHMARKS = {
    'fashion_mnist': dict(dataset='fashion_mnist', output='paper_table', cpu=_CPU_FASHION, gpu=_GPU),
    'fashion_mnist_open': dict(
        dataset='fashion_mnist_open', output='open_set_fashion', gpu=_GPU,
        cpu=['--model', 'sfsc_resnet10t', '--input-size', '3', '32', '32', '--embed-dim', '128', '--max-train', '3000',
             '--epochs', '3', '--batch-size', '64', '--eval-every', '100', '--eval-max-query', '500',
             '--eval-max-gallery', '4500']),
    'glyphs': dict(dataset='glyphs', output='glyphs_scratch', gpu=_GPU, cpu=_CPU_GLYPHS),
    # the SFSC paper's protocol: every run fine-tunes from a pretrained plain timm network (here the glyph stand-in
    # for ImageNet weights, benchmarks/experiments/glyph_standin.py, built on first use)
    'glyphs_pretrained': dict(dataset='glyphs', output='glyphs_pretrained', gpu=_GPU, cpu=_CPU_GLYPHS,
                              pretrained='standin'),
}
# (query width, gallery width) columns of the paper's table
PAPER_COLUMNS = [(0.25, 0.25), (0.25, 1.0), (0.5, 0.5), (0.75, 0.75), (1.0, 1.0)]


def run_one(row: str, seed: int, folder: Path, dataset: str, setting: List[str], extra: List[str],
            threads: Optional[int] = None) -> Dict:
    """Train (or resume) one run of a row unless it is exported; its metrics, wall seconds and CPU seconds."""
    metrics_file = folder / 'export' / 'metrics.json'
    method, row_args, _ = ROWS[row]
    if not metrics_file.is_file():
        command = [sys.executable, str(TRAIN), '--dataset', dataset, *setting,
                   '--method', method, *row_args, '--seed', str(seed), '--output', str(folder), '--no-progress',
                   *extra]
        if (folder / 'checkpoints' / 'last').is_dir():
            command += ['--resume', str(folder)]
        print(f'--- {row} seed {seed}: {" ".join(command[1:])}', flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.time()
        env = dict(os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads else {}))
        with open(folder / 'train.log', 'a') as log:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            # CPU time of this run alone (not of the other jobs sharing the machine): what the budget is made of
            _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f'{row} seed {seed} failed; see {folder / "train.log"}')
        timing = dict(seconds=round(time.time() - start, 1), cpu_seconds=round(usage.ru_utime + usage.ru_stime, 1))
        write_json_atomically(folder / 'timing.json', timing)
        print(f'--- {row} seed {seed} done: {timing}', flush=True)
    metrics = json.loads(metrics_file.read_text())
    timing_file = folder / 'timing.json'
    metrics['timing'] = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    return metrics


def mean_std(values: List[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def matrix_summary(matrix: List[List[float]], widths: List[float]) -> Dict[str, float]:
    """Diagonal mean (own gallery), cross-width mean, and whether the narrowest width's row is self-compatible."""
    summary = summarize_compatibility(matrix, widths)
    return dict(diagonal_mean=summary['diagonal_mean'], cross_mean=summary['cross_width_mean'],
                narrowest_row_self_compatible=all(query != widths[0] for query, _ in summary['violations']))


def build_table(results: Dict[str, Dict[int, Dict]]) -> Dict:
    rows = {}
    for method, by_seed in results.items():
        runs = list(by_seed.values())
        widths = runs[0]['widths']
        index = {w: i for i, w in enumerate(widths)}
        matrices = torch.tensor([r['matrix'] for r in runs])
        summaries = [matrix_summary(r['matrix'], widths) for r in runs]
        rows[method] = dict(
            label=ROWS[method][2], method=ROWS[method][0], args=ROWS[method][1], seeds=sorted(by_seed), widths=widths,
            mean_matrix=matrices.mean(0).tolist(),
            std_matrix=(matrices.std(0) if len(runs) > 1 else torch.zeros_like(matrices[0])).tolist(),
            columns={f'{q:g}->{g:g}': mean_std([r['matrix'][index[q]][index[g]] for r in runs])
                     for q, g in PAPER_COLUMNS},
            mean_of_matrix=mean_std([r['summary']['mean'] for r in runs]),
            diagonal_mean=mean_std([x['diagonal_mean'] for x in summaries]),
            cross_mean=mean_std([x['cross_mean'] for x in summaries]),
            self_compatible_runs=sum(bool(r['summary']['self_compatible']) for r in runs),
            narrowest_row_self_compatible_runs=sum(x['narrowest_row_self_compatible'] for x in summaries),
            violations=[r['summary']['violations'] for r in runs],
            seconds=[r['timing'].get('seconds') for r in runs],
            cpu_seconds=[r['timing'].get('cpu_seconds') for r in runs])
    return rows


def goal_checks(rows: Dict, method: str) -> Optional[Dict]:
    """The open-set goal (issue 9), each part computed on the mean matrices: ``method``'s cross-width mean within 2
    points of its diagonal mean; its φ_1/16 row self-compatible; above BCT-S and Asymmetric-S on the mean of the
    matrix and on φ→φ; its diagonal at most 1 point below the independent models' at every width."""
    needed = (method, 'bct_s', 'asymmetric_s', 'independent')
    if any(name not in rows for name in needed):
        return None

    def mean(name):
        return torch.tensor(rows[name]['mean_matrix']) * 100

    m, bct_s, asym_s, independent = (mean(name) for name in needed)
    n = len(m)
    diag, cross = m.diagonal(), m[~torch.eye(n, dtype=torch.bool)]
    gap_to_independent = (diag - independent.diagonal()).tolist()
    checks = {
        'cross_within_2_of_diagonal': (float(diag.mean() - cross.mean()), bool(diag.mean() - cross.mean() <= 2)),
        'narrowest_row_self_compatible': (m[0].tolist(), bool((m[0, 1:] >= m[0, 0]).all())),
        'mean_above_bct_s_and_asymmetric_s': ([float(m.mean()), float(bct_s.mean()), float(asym_s.mean())],
                                              bool(m.mean() > max(bct_s.mean(), asym_s.mean()))),
        'full_width_above_bct_s_and_asymmetric_s': ([float(m[-1, -1]), float(bct_s[-1, -1]), float(asym_s[-1, -1])],
                                                    bool(m[-1, -1] > max(bct_s[-1, -1], asym_s[-1, -1]))),
        'diagonal_within_1_of_independent': (gap_to_independent, all(g >= -1 for g in gap_to_independent)),
    }
    return dict(method=method, checks={k: dict(value=v, holds=h) for k, (v, h) in checks.items()},
                holds=all(h for _, h in checks.values()))


def markdown(rows: Dict) -> str:
    header = ['method', *(f'{parameter_share_label(q)}→{parameter_share_label(g)}' for q, g in PAPER_COLUMNS),
              'mean of matrix', 'diagonal', 'cross-width', 'φ_1/16 row self-compatible', 'self-compatible', 'seeds']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in rows.values():
        runs = len(row['seeds'])
        cells = [row['label'], *(row['columns'][f'{q:g}->{g:g}'] for q, g in PAPER_COLUMNS), row['mean_of_matrix'],
                 row['diagonal_mean'], row['cross_mean'], f'{row["narrowest_row_self_compatible_runs"]}/{runs}',
                 f'{row["self_compatible_runs"]}/{runs}', ','.join(map(str, row['seeds']))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def archived_batches(previous: Optional[Dict], rows: Dict) -> List[Dict]:
    """The table's earlier batches to keep when it is rewritten: the previous JSON's ``archived_batches``, and a new
    one of its rows whose seeds this folder's runs no longer all cover (e.g. a table whose run folders are not kept),
    so that rewriting a table never drops a published row.

    Args:
        previous: the table's JSON before this invocation (None if there was none).
        rows: the rows built from the runs this folder holds now.
    """
    if previous is None:
        return []
    batches = list(previous.get('archived_batches', []))
    gone = {name: row for name, row in previous.get('rows', {}).items()
            if not set(row['seeds']) <= set(rows.get(name, {}).get('seeds', []))}
    if gone:
        goal = previous.get('goal') or {}
        batches.append(dict(
            seeds=sorted({seed for row in gone.values() for seed in row['seeds']}),
            note='rows of the previous table whose runs this folder no longer holds, as that table had them',
            rows=gone, table_markdown=markdown(gone), goal={name: goal[name] for name in gone if name in goal}))
    return batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--benchmark', choices=sorted(BENCHMARKS), default='fashion_mnist')
    parser.add_argument('--methods', nargs='+', default=METHODS, choices=list(ROWS),
                        help='table rows: a method, or a method with changed settings (see ROWS)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--setting', choices=('cpu', 'gpu'), default='gpu' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--output', type=Path, default=None,
                        help='results folder (default: benchmarks/results/experiments/<the benchmark\'s folder>)')
    parser.add_argument('--jobs', type=int, default=1, help='runs trained at once')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads per training run (OMP_NUM_THREADS); default 1 with --jobs > 1')
    parser.add_argument('extra', nargs=argparse.REMAINDER, help='more trainer overrides after --, e.g. -- --lr 0.05')
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ['--'] else args.extra
    benchmark = BENCHMARKS[args.benchmark]
    output = args.output or REPO / 'benchmarks' / 'results' / 'experiments' / benchmark['output']
    setting = benchmark[args.setting]
    if benchmark.get('pretrained') == 'standin':
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from glyph_standin import build_standin  # noqa: E402 (a sibling script; built once, then cached)
        # relative to the repository, where every run starts: the runs' recorded configs stay valid in any checkout
        setting = [*setting, '--pretrained', '--pretrained-file',
                   str(build_standin().relative_to(REPO))]
    threads = args.threads or (1 if args.jobs > 1 else None)
    start = time.time()
    # seed by seed: an interrupted invocation leaves every row at the same seeds, which is what pairing needs
    todo = [(method, seed) for seed in args.seeds for method in args.methods]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait for their training subprocess
        futures = [pool.submit(run_one, method, seed, output / 'runs' / method / f'seed_{seed}', benchmark['dataset'],
                               setting, extra, threads) for method, seed in todo]
        for future in futures:
            future.result()
    # the table covers every finished run under OUTPUT, so separate invocations add up
    results: Dict[str, Dict[int, Dict]] = {}
    for method in ROWS:
        for folder in sorted((output / 'runs' / method).glob('seed_*')):
            if (folder / 'export' / 'metrics.json').is_file():
                results.setdefault(method, {})[int(folder.name[5:])] = run_one(
                    method, 0, folder, benchmark['dataset'], [], [])
    rows = build_table(results)
    table = markdown(rows)
    for method, row in rows.items():
        plot_compatibility_heatmap(row['mean_matrix'], row['widths'], output / f'{method}.png',
                                   title=f'{row["label"]}: mAP (%), mean of seeds {row["seeds"]}')
    cpu_seconds = [s for row in rows.values() for s in row['cpu_seconds'] if s is not None]
    goals = {name: goal_checks(rows, name) for name in rows if ROWS[name][0].startswith('sfsc')}
    table_file = output / 'paper_table.json'
    previous = json.loads(table_file.read_text()) if table_file.is_file() else None
    payload = dict(benchmark=args.benchmark, dataset=benchmark['dataset'], setting=args.setting, setting_args=setting,
                   extra=extra, jobs=args.jobs, threads=threads, rows=rows, table_markdown=table, goal=goals,
                   total_cpu_seconds=sum(cpu_seconds), seconds_this_invocation=time.time() - start)
    batches = archived_batches(previous, rows)
    if batches:
        payload['archived_batches'] = batches
    write_json_atomically(table_file, payload)
    write_text_atomically(output / 'paper_table.md', table + '\n')
    print(table)
    for method, row in rows.items():
        print(f'\n{row["label"]} (mean over seeds {row["seeds"]}), mAP %:\n'
              + format_compatibility_table(row['mean_matrix'], row['widths']))
    for name, goal in goals.items():
        if goal is not None:
            print(f'\ngoal for {name}: ' + ('holds' if goal['holds'] else 'missed') + ''.join(
                f'\n  {key}: {"yes" if c["holds"] else "no"} {c["value"]}' for key, c in goal['checks'].items()))
    print(f'\n{time.time() - start:.0f} s in this invocation, {sum(cpu_seconds):.0f} CPU seconds in all runs of the '
          f'table; wrote {output}/paper_table.{{json,md}} and heatmaps')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
