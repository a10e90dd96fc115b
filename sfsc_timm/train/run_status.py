""" What a run folder holds: whether a run is there, how far it trained, whether its final step is done.

A run ends with two steps after its last epoch: the compatibility matrix on the query / gallery and the ``export/``
folder. A run killed during them has a last checkpoint at its final epoch and no (or an older) export; ``--resume``
and ``sfsc-timm export`` then run just those steps.
"""
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .checkpointing import TRAINING_STATE_NAME, load_training_state
from .legacy import upgrade_saved_recipe
from .methods import METHODS

__all__ = ['RUN_FILES', 'RunStatus', 'run_files', 'run_status', 'export_matches']

_logger = logging.getLogger(__name__)

# what sfsc-timm train writes into a run folder; any of them means a run is there
RUN_FILES = ('config.yaml', 'metrics.jsonl', 'checkpoints', 'export')


@dataclass
class RunStatus:
    """How far the run in ``run_dir`` got.

    Attributes:
        run_dir: The run folder.
        trained_epochs: Epochs in its last checkpoint (None: no checkpoint).
        total_epochs: Epochs its recipe trains (``epochs`` times the method's stages; None: no checkpoint).
        exported: ``export/`` holds the final evaluation of this recipe.
    """
    run_dir: Path
    trained_epochs: Optional[int] = None
    total_epochs: Optional[int] = None
    exported: bool = False

    @property
    def finished_training(self) -> bool:
        return self.trained_epochs is not None and self.trained_epochs >= self.total_epochs

    @property
    def needs_final_step(self) -> bool:
        """Training finished but the final evaluation / export did not (a kill during them)."""
        return self.finished_training and not self.exported


def run_files(run_dir: Union[str, Path]) -> List[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir``."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()] if run_dir.is_dir() else []


def export_matches(run_dir: Union[str, Path], config: Dict[str, Any]) -> bool:
    """Whether ``run_dir/export/metrics.json`` is the final evaluation of a run with this recipe's ``epochs``."""
    path = Path(run_dir) / 'export' / 'metrics.json'
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    recipe = metrics.get('recipe') if isinstance(metrics, dict) else None
    if not isinstance(recipe, dict):
        return False
    # a run exported before the methods took options names a method that may be an option value now
    return recipe.get('epochs') == config.get('epochs') \
        and upgrade_saved_recipe(recipe).get('method') == upgrade_saved_recipe(config).get('method')


def run_status(run_dir: Union[str, Path], state: Optional[Dict[str, Any]] = None) -> RunStatus:
    """How far the run in ``run_dir`` got (``state``: its last checkpoint's training state, if already read)."""
    run_dir = Path(run_dir)
    last = run_dir / 'checkpoints' / 'last'
    if state is None:
        if not (last / TRAINING_STATE_NAME).is_file():
            return RunStatus(run_dir)
        state = load_training_state(last)
    config = upgrade_saved_recipe(state['config'])
    method = METHODS.get(config.get('method'))
    stages = method.step.num_stages if method is not None else 1
    return RunStatus(run_dir, trained_epochs=int(state['epoch']), total_epochs=int(config['epochs']) * stages,
                     exported=export_matches(run_dir, config))
