""" How often the widths' gradients pull apart, on the whole shared vector and layer by layer, per training epoch.

The SFSC paper's projection (PCGrad on the whole shared gradient, docs/design.md) acts only when two widths' whole
gradients have a negative dot product. Two widths may agree on the whole and still pull one layer apart; the trainer
logs both counts for every SFSC run (`metrics.jsonl`: `conflicts`, `layer_pairs`, `layer_conflicts`,
`layer_conflicts_widest`). This script tabulates them for the runs of `benchmarks/experiments/paper_table.py` rows.

    .venv/bin/python benchmarks/experiments/layer_conflicts.py \\
        --folder benchmarks/results/experiments/open_set_6_epochs --rows sfsc_ce_ens sfsc_ce_ens_layer

JSON to the table's one ``FOLDER/layer_conflicts.json`` of the first folder (or ``--output``): the rows tabulated
replace theirs there, the other rows are kept, with the command that tabulated each.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List

from sfsc_timm.atomic_io import write_json_atomically

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the experiments' shared helpers, however this is loaded
from _runs import seed_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFLICTS_FILE = 'layer_conflicts.json'  # in the table's folder


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--folder', type=Path, nargs='+', required=True,
                        help='paper_table.py output folder(s): runs/ROW/seed_S/metrics.jsonl are read')
    parser.add_argument('--rows', nargs='+', required=True, help='table rows, e.g. sfsc_ce_ens sfsc_ce_ens_layer')
    parser.add_argument('--output', type=Path, default=None,
                        help=f'the JSON to update (default: the first folder\'s {CONFLICTS_FILE})')
    return parser.parse_args()


def epoch_counts(record: Dict, num_widths: int) -> Dict:
    """One epoch's counts and shares (None where the run did not compare layers)."""
    pairs = record.get('layer_pairs', 0)
    # of a parameter's m (m - 1) / 2 width pairs, m - 1 involve the widest width
    widest_pairs = pairs * 2 / num_widths
    return dict(
        epoch=record['epoch'], projections=record['conflicts'], layer_pairs=pairs or None,
        layer_conflicts=record.get('layer_conflicts'), layer_conflicts_widest=record.get('layer_conflicts_widest'),
        layer_conflict_share=record['layer_conflicts'] / pairs if pairs else None,
        widest_layer_conflict_share=record['layer_conflicts_widest'] / widest_pairs if pairs else None)


def read_runs(folders: List[Path], row: str) -> Dict[str, List[Dict]]:
    runs = {}
    for run in seed_runs(folders, row, 'metrics.jsonl').values():
        records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines() if line.strip()]
        num_widths = len(records[0]['width_losses'])
        runs[run.name] = dict(epochs=[epoch_counts(r, num_widths) for r in records],
                              finished=(run / 'export' / 'metrics.json').is_file())
    if not runs:
        raise SystemExit(f'no runs of {row} under {", ".join(map(str, folders))} (runs/{row}/seed_*/metrics.jsonl).')
    return runs


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (what the recorded command quotes)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def record_rows(output: Path, folders: List[str], rows: Dict[str, Dict], command: str) -> Dict:
    """Put ``rows`` into the JSON ``output`` (its other rows kept, each with the command that tabulated it),
    atomically; the folders are the union of the file's and these."""
    result = json.loads(output.read_text()) if output.is_file() else dict(folders=[], rows={}, commands={})
    result['folders'] = list(dict.fromkeys([*result['folders'], *folders]))
    result['rows'].update(rows)
    result.setdefault('commands', {}).update({row: command for row in rows})
    write_json_atomically(output, result)
    return result


def main() -> int:
    args = parse_args()
    folders = [_shown(f) for f in args.folder]
    output = args.output or args.folder[0] / CONFLICTS_FILE
    command = ' '.join(['.venv/bin/python benchmarks/experiments/layer_conflicts.py', '--folder', *folders, '--rows',
                        *args.rows] + (['--output', shlex.quote(_shown(args.output))] if args.output else []))
    result = dict(folders=folders, rows={row: read_runs(args.folder, row) for row in args.rows})
    for row, runs in result['rows'].items():
        for seed, run in runs.items():
            print(f'{row} {seed}{"" if run["finished"] else " (unfinished)"}')
            for e in run['epochs']:
                share = '-' if e['layer_conflict_share'] is None else f'{100 * e["layer_conflict_share"]:.1f}%'
                widest = '-' if e['widest_layer_conflict_share'] is None else \
                    f'{100 * e["widest_layer_conflict_share"]:.1f}%'
                print(f'  epoch {e["epoch"]}: projections {e["projections"]:6d}  layer pairs in conflict {share:>6s}'
                      f'  of those with the widest width {widest:>6s}')
    record_rows(output, result['folders'], result['rows'], command)
    print(f'written to {output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
