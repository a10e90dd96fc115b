"""Find and read what an export needs: the checkpoint, its evaluation (metrics.json), recipe and heatmap.

Accepted sources: a folder holding ``model.safetensors`` + ``config.json`` + ``metrics.json`` (an ``sfsc-timm eval``
output copied next to a checkpoint, a trainer's ``RUN/export`` folder, or an earlier Hub export), or a trainer run
folder whose ``export`` subfolder is such a folder.
"""
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from ..eval import summarize_compatibility
from ..models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from ..models.checkpoint_io import RUN_EXPORT, CheckpointNotFoundError, find_checkpoint_folder
from ..models.model_set import is_model_set_folder

__all__ = ['ExportError', 'RunFolder', 'METRICS_NAME', 'RECIPE_NAME', 'HEATMAP_NAME', 'read_run', 'read_metrics',
           'read_config']

METRICS_NAME = 'metrics.json'
RECIPE_NAME = 'recipe.yaml'
HEATMAP_NAME = 'compatibility.png'
_RUN_RECIPE_NAMES = (RECIPE_NAME, 'config.yaml')  # a Hub export's recipe, a trainer run's recipe


class ExportError(ValueError):
    """A run folder, checkpoint or metrics file that cannot be exported as it is."""


@dataclass
class RunFolder:
    """What one trained supernet ships with.

    Attributes:
        folder: the folder holding the checkpoint and metrics.json.
        config: its config.json (timm layout).
        metrics: its metrics.json (``widths`` and ``matrix`` checked; other keys kept as they are).
        recipe: the training recipe as a mapping, or None when the run left none.
        heatmap: the compatibility heatmap PNG next to the metrics, or None (the export then draws one).
    """
    folder: Path
    config: Dict[str, Any]
    metrics: Dict[str, Any]
    recipe: Optional[Dict[str, Any]] = None
    heatmap: Optional[Path] = None

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_NAME

    @property
    def architecture(self) -> str:
        return self.config['architecture']

    @property
    def widths(self) -> Tuple[float, ...]:
        """The widths the checkpoint was trained at (config.json's model_args)."""
        return tuple(float(w) for w in self.config['model_args']['widths'])

    @property
    def input_size(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.config['pretrained_cfg']['input_size'])


def _evaluated_checkpoint(source: Path) -> Path:
    """The checkpoint folder of ``source`` (the one resolver: itself or its run's ``export/``), checked to be one
    supernet checkpoint with its evaluation.

    Raises:
        ExportError: no checkpoint there, a baseline's per-width models, or no metrics.json (saying how to write it).
    """
    try:
        folder = find_checkpoint_folder(source)
    except CheckpointNotFoundError as e:
        raise ExportError(str(e)) from None
    if is_model_set_folder(folder):
        raise ExportError(
            f'{folder} holds a baseline\'s separate per-width models (width_*/ folders), not an SFSC supernet. A '
            'Hub export publishes one supernet checkpoint that every width loads from; train with method: sfsc '
            '(or another supernet method), or load a member folder directly with sfsc_timm.load.')
    if not (folder / METRICS_NAME).is_file():
        raise ExportError(f'{folder} holds a checkpoint, but its files lack {METRICS_NAME} (the evaluation the model '
                          f'card reports). Evaluate it first: sfsc-timm eval {folder} --output {folder} (writes '
                          f'{METRICS_NAME} and the heatmap).')
    return folder


def read_config(folder: Path) -> Dict[str, Any]:
    """config.json of a supernet checkpoint, checked for what the export and the loaders need."""
    path = folder / CONFIG_NAME
    config = _read_json(path)
    args = config.get('model_args') if isinstance(config.get('model_args'), dict) else {}
    problems = []
    if not isinstance(config.get('architecture'), str):
        problems.append('no "architecture"')
    if not isinstance(args.get('widths'), list) or not args['widths']:
        problems.append('no "model_args.widths"')
    if 'width' in args:
        problems.append(f'it is a static sub-model (model_args.width={args["width"]}), not the supernet')
    cfg = config.get('pretrained_cfg') if isinstance(config.get('pretrained_cfg'), dict) else {}
    if len(cfg.get('input_size') or ()) != 3:
        problems.append('no "pretrained_cfg.input_size"')
    if problems:
        raise ExportError(f'{path}: {"; ".join(problems)}. Export the supernet written by sfsc_timm.save(net, folder) '
                          'or by sfsc-timm train.')
    return config


def read_metrics(path: Union[str, Path]) -> Dict[str, Any]:
    """metrics.json, with ``widths`` and ``matrix`` checked (square, ascending widths, mAP fractions in [0, 1]).

    Keys other than ``widths`` and ``matrix`` are kept as they are; a trainer's metrics.json has more of them.
    """
    path = Path(path)
    metrics = _read_json(path)
    missing = [key for key in ('widths', 'matrix') if key not in metrics]
    if missing:
        raise ExportError(
            f'{path} has no {" and no ".join(repr(k) for k in missing)}: it is not a compatibility evaluation. Write '
            f'one with: sfsc-timm eval CHECKPOINT --output {path.parent}')
    widths, matrix = metrics['widths'], metrics['matrix']
    if not isinstance(widths, list) or not all(isinstance(w, numbers.Real) and not isinstance(w, bool)
                                               for w in widths):
        raise ExportError(f'{path}: "widths" must be a list of numbers, got {widths!r}.')
    if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
        raise ExportError(f'{path}: "matrix" must be a list of rows (mAP, query width x gallery width).')
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
               for row in matrix for v in row):
        raise ExportError(f'{path}: "matrix" must hold finite numbers only.')
    try:
        summarize_compatibility(matrix, widths)
    except ValueError as e:
        raise ExportError(f'{path}: {e}') from None
    metrics['widths'] = [float(w) for w in widths]
    return metrics


def read_run(source: Union[str, Path]) -> RunFolder:
    """Find the checkpoint + metrics folder of ``source`` and read everything an export uses.

    Raises:
        ExportError: files missing, or config.json and metrics.json that do not describe the same model.
    """
    source = Path(source)
    folder = _evaluated_checkpoint(source)
    config = read_config(folder)
    metrics = read_metrics(folder / METRICS_NAME)
    trained = tuple(float(w) for w in config['model_args']['widths'])
    extra = [w for w in metrics['widths'] if w not in trained]
    if extra:
        raise ExportError(f'{folder / METRICS_NAME} evaluates widths {extra} that the checkpoint was not trained at '
                          f'(its widths: {trained}): the metrics belong to another checkpoint. Evaluate this one with '
                          f'sfsc-timm eval {folder} --output {folder}.')
    evaluated = metrics.get('architecture') or metrics.get('model')
    if evaluated and evaluated != config['architecture']:
        raise ExportError(f'{folder / METRICS_NAME} evaluates {evaluated} but {folder / CONFIG_NAME} is a '
                          f'{config["architecture"]}: the metrics belong to another checkpoint. Evaluate this one '
                          f'with sfsc-timm eval {folder} --output {folder}.')
    return RunFolder(folder=folder, config=config, metrics=metrics, recipe=_find_recipe(source, folder, metrics),
                     heatmap=_find_heatmap(folder))


def _find_recipe(source: Path, folder: Path, metrics: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if isinstance(metrics.get('recipe'), dict):  # the trainer records the recipe it ran with
        return metrics['recipe']
    locations = [folder, source] + ([folder.parent] if folder.name == RUN_EXPORT else [])
    for location in dict.fromkeys(locations):  # the export folder, then the run folder
        named = [location / name for name in _RUN_RECIPE_NAMES if (location / name).is_file()]
        others = sorted(p for p in location.glob('*.y*ml') if p.suffix in ('.yaml', '.yml'))
        path = named[0] if named else others[0] if len(others) == 1 else None  # a known name, or the only YAML
        if path is not None:
            try:
                recipe = yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise ExportError(f'{path} is not valid YAML ({e}); fix or remove it.') from None
            if not isinstance(recipe, dict):
                raise ExportError(f'{path} must be a YAML mapping of recipe keys, got {type(recipe).__name__}.')
            return recipe
    return None


def _find_heatmap(folder: Path) -> Optional[Path]:
    if (folder / HEATMAP_NAME).is_file():
        return folder / HEATMAP_NAME
    pngs: List[Path] = sorted(folder.glob('*.png'))
    return pngs[0] if len(pngs) == 1 else None


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f'{path} does not exist.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f'{path} is not valid JSON ({e}); it is truncated or was not written by sfsc-timm.') from None
    if not isinstance(value, dict):
        raise ExportError(f'{path} must hold a JSON object, got {type(value).__name__}.')
    return value
