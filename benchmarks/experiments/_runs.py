""" The run folders `benchmarks/experiments/paper_table.py` leaves (``FOLDER/runs/ROW/seed_S``), found across
several table folders.

The analysis scripts (`paired_seeds.py`, `layer_conflicts.py`) read one row's runs from every folder a table was
split over (seeds 0-2 in one, 3-4 in another, ...); a seed found twice is refused, since which run is meant is not
knowable.
"""
from pathlib import Path
from typing import Dict, List

__all__ = ['seed_runs']


def seed_runs(folders: List[Path], row: str, holding: str) -> Dict[int, Path]:
    """seed -> run folder, for every ``FOLDER/runs/ROW/seed_S`` that holds the file ``holding`` (a path inside it,
    e.g. ``export/metrics.json`` for finished runs), in seed order.

    Raises:
        SystemExit: a seed is in more than one of the folders.
    """
    found: Dict[int, Path] = {}
    for folder in folders:
        for run in sorted((folder / 'runs' / row).glob('seed_*')):
            if not (run / holding).is_file():
                continue
            seed = int(run.name[len('seed_'):])
            if seed in found:
                raise SystemExit(f'{row} seed {seed} is in more than one of the folders ({found[seed].parents[2]} and '
                                 f'{folder}); pass each seed once.')
            found[seed] = run
    return dict(sorted(found.items()))
