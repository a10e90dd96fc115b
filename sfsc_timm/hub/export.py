"""``sfsc-timm export RUN_DIR OUT_DIR``: the Hub repository folder of one trained supernet.

The folder holds ``model.safetensors`` (the supernet), ``config.json`` (timm's layout), ``README.md`` (the model card),
``compatibility.png`` (the heatmap), ``metrics.json`` (the evaluation the card reports) and, when the run recorded one,
``recipe.yaml``. It is written next to ``OUT_DIR`` and swapped in whole, so a good export is never half-overwritten.
"""
import json
import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Union

import yaml

from ..atomic_io import check_destination, staged_folder
from ..eval import plot_compatibility_heatmap
from ..errors import CommandParser, check_output_folder_writable, run_command
from ..models import ModelKind, load, model_kind
from ..models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, tidy_config
from ..train.cli import finish_run
from ..train.run_status import run_status
from .measure import Measurement, measure_widths
from .model_card import build_model_card, public_name, public_recipe
from .run_folder import HEATMAP_NAME, METRICS_NAME, RECIPE_NAME, ExportError, RunFolder, read_run

__all__ = ['CARD_NAME', 'EXPORT_FILES', 'export_run', 'finish_final_step', 'check_output_folder', 'build_parser',
           'main']

CARD_NAME = 'README.md'
EXPORT_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, HEATMAP_NAME, METRICS_NAME, RECIPE_NAME)


def check_output_folder(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an export (it would be deleted with everything in it), or a file."""
    check_destination(out_dir, EXPORT_FILES, folder=True,
                      fix='choose a new or empty OUT_DIR, or remove those files')


def finish_final_step(source: Union[str, Path]) -> None:
    """A training run killed during its final evaluation / export gets them now; one still training is named."""
    source = Path(source)
    if not (source / 'checkpoints').is_dir():
        return
    status = run_status(source)
    if status.needs_final_step:
        print(f'{source} finished training but not its final evaluation and export: running them first')
        finish_run(source)
    elif status.trained_epochs is not None and not status.finished_training:
        raise ExportError(f'{source} has trained {status.trained_epochs} of {status.total_epochs} epochs; continue '
                          f'it with sfsc-timm train --resume {source}, then export it.')


def export_run(
        source: Union[str, Path],
        out_dir: Union[str, Path],
        *,
        repo_id: Optional[str] = None,
        license: Optional[str] = None,
        datasets: Optional[Sequence[str]] = None,
        tags: Sequence[str] = (),
        latency_batch: int = 1,
        latency_repeats: int = 20,
        template_path: Optional[Union[str, Path]] = None,
        verbose: bool = False,
) -> Path:
    """Write the Hub repository folder of the supernet in ``source`` to ``out_dir``, atomically.

    Args:
        source: a run folder (its ``export`` subfolder is used) or a folder with model.safetensors, config.json and
            metrics.json (and optionally a recipe YAML and the heatmap PNG).
        out_dir: the export folder; an existing export there is replaced only once the new one is complete.
        repo_id: the Hub repository this export is for (the card's usage snippet loads from it).
        license, datasets, tags, template_path: see :func:`sfsc_timm.hub.model_card.build_model_card`.
        latency_batch, latency_repeats: the CPU latency measurement (batch size, forward passes per width).
        verbose: print the per-width measurements.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    finish_final_step(source)
    run = read_run(source)
    check_output_folder(out_dir)
    net = load(run.folder)
    if model_kind(net) is not ModelKind.SUPERNET:
        raise ExportError(f'{run.folder} holds a static sub-model, not the supernet; export the supernet checkpoint.')
    measurement = measure_widths(net, run.widths, run.input_size, batch_size=latency_batch, repeats=latency_repeats)
    if verbose:
        _print_measurement(measurement)
    with staged_folder(out_dir) as staging:
        _write_files(run, staging)
        card = build_model_card(run, measurement, repo_id=repo_id, local_folder=out_dir, license=license,
                                datasets=datasets, tags=tags, has_recipe_file=(staging / RECIPE_NAME).is_file(),
                                template_path=template_path)
        card.save(staging / CARD_NAME)
    return out_dir


def _write_files(run: RunFolder, staging: Path) -> None:
    for name in (WEIGHTS_NAME, CONFIG_NAME, METRICS_NAME):  # byte for byte: the card reports exactly these
        shutil.copyfile(run.folder / name, staging / name)
    tidy_config(staging / CONFIG_NAME)  # a checkpoint saved before config.json stopped repeating keys
    _make_metrics_public(staging / METRICS_NAME)
    if run.heatmap is not None:
        shutil.copyfile(run.heatmap, staging / HEATMAP_NAME)
    else:
        plot_compatibility_heatmap(run.metrics['matrix'], run.metrics['widths'], staging / HEATMAP_NAME,
                                   title=f'{run.architecture}: mAP (%)')
    if run.recipe:
        (staging / RECIPE_NAME).write_text(yaml.safe_dump(public_recipe(run.recipe), sort_keys=False))


def _make_metrics_public(path: Path) -> None:
    """Take local paths out of metrics.json's recipe and dataset (a public repository holds it); else keep it as is."""
    metrics = json.loads(path.read_text())
    public = dict(metrics)
    if isinstance(metrics.get('recipe'), dict):
        public['recipe'] = public_recipe(metrics['recipe'])
    if isinstance(metrics.get('dataset'), str):
        public['dataset'] = public_name(metrics['dataset'])
    if public != metrics:
        path.write_text(json.dumps(public, indent=2))


def _print_measurement(measurement: Measurement) -> None:
    print(f'per width (input {"x".join(map(str, measurement.input_size))}, latency: median of {measurement.repeats} '
          f'batches of {measurement.batch_size} on {measurement.threads} thread(s)):')
    for s in measurement.widths:
        print(f'  width {s.width:<5g} {s.parameters / 1e6:8.2f} M params {s.gmacs:9.4f} GMACs {s.latency_ms:9.2f} ms')


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm export',
        description='Write the Hub repository folder of a trained supernet: weights, config, model card, heatmap.')
    parser.add_argument('run_dir', type=Path,
                        help='run folder (uses RUN_DIR/export) or a folder with model.safetensors, config.json and '
                             'metrics.json')
    parser.add_argument('out_dir', type=Path, help='the export folder to write (replaced atomically if it exists)')
    parser.add_argument('--repo-id', default=None, help='ORG/NAME the card\'s usage snippet loads from (default: '
                                                        'the local folder; sfsc-timm push sets it)')
    parser.add_argument('--license', default=None, help="the weights' license (default: config.json's, else "
                                                        'apache-2.0)')
    parser.add_argument('--dataset-id', dest='datasets', action='append', default=None,
                        help='Hub dataset id for the card metadata (repeatable; default: from metrics.json)')
    parser.add_argument('--tag', dest='tags', action='append', default=[], help='extra card tag (repeatable)')
    parser.add_argument('--latency-batch', type=int, default=1, help='batch size of the CPU latency measurement')
    parser.add_argument('--latency-repeats', type=int, default=20, help='forward passes timed per width')
    parser.add_argument('--template', type=Path, default=None, help='model card Jinja template (default: '
                                                                    'model_cards/sfsc_model_card.md)')
    return parser


def _export(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    check_output_folder_writable(args.out_dir, 'OUT_DIR')
    out = export_run(args.run_dir, args.out_dir, repo_id=args.repo_id, license=args.license,
                     datasets=args.datasets, tags=args.tags, latency_batch=args.latency_batch,
                     latency_repeats=args.latency_repeats, template_path=args.template, verbose=True)
    print(f'wrote {out}: {", ".join(sorted(p.name for p in out.iterdir()))}')


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm export', _export, argv)
