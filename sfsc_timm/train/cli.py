""" ``sfsc-timm train``: parse the recipe and overrides, check the run folder and a resume against its run, train. """
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import check_output_folder_writable, run_command
from .checkpointing import load_training_state, resolve_checkpoint
from .config import (
    RUNTIME_KEYS, ConfigError, TrainConfig, check_pretrained_file, config_differences, config_from_dict, parse_args,
    upgrade_saved_recipe,
)
from .run_lock import RunLock
from .run_status import run_files, run_status

__all__ = ['main', 'resolve_run', 'finish_run', 'RESUME_ADJUSTABLE_KEYS']

_logger = logging.getLogger(__name__)

# keys a resumed run may change although they change the weights from there on: the fixes a stopped run needs
RESUME_ADJUSTABLE_KEYS = frozenset({'clip_grad'})


def _format_differences(differences) -> str:
    return '; '.join(f'{key}: checkpoint {saved!r} vs now {now!r}' for key, saved, now in differences)


def resolve_run(argv: Optional[List[str]] = None) -> Tuple[TrainConfig, Optional[Dict[str, Any]], Optional[Path],
                                                           Optional[int]]:
    """(config, resume state, resume folder, stop_after) from the command line.

    Without ``-c``, a resume takes the run's own recipe (plus command-line overrides). With ``-c``, the recipe must
    match the checkpoint's in every key that changes the trained weights, except :data:`RESUME_ADJUSTABLE_KEYS`.
    A resume of a run whose training finished runs only its missing final evaluation and export.

    Raises:
        ConfigError: unknown / invalid keys, a missing ``pretrained_file`` (new runs), a resume from a run with another
            recipe (naming the differing keys), or of a run that is complete.
    """
    given, extra = parse_args(argv)
    if extra.resume is None:
        cfg = config_from_dict(given, where=extra.config or 'command line')
        check_pretrained_file(cfg)  # a resumed run reads its checkpoint instead
        return cfg, None, None, extra.stop_after
    folder = resolve_checkpoint(extra.resume)
    state = load_training_state(folder)
    saved = upgrade_saved_recipe(state['config'])
    if given.get('output') is None:
        # continue in the run folder the checkpoint belongs to
        run_dir = folder.parent.parent if folder.parent.name == 'checkpoints' else Path(saved.get('output') or '.')
        given['output'] = str(run_dir)
    cfg = config_from_dict(given if extra.config else {**saved, **given}, where=extra.config or 'command line')
    # a key added to the recipe after the checkpoint was written is missing from its config; the checkpoint ran with
    # that key's default (a new key's default always reproduces what the code did before it existed)
    resolved = config_from_dict(dict(saved), where=f'{folder} (its config)').to_dict()
    saved = {**resolved, **saved, saved['method']: resolved[saved['method']]}
    differences = config_differences(saved, cfg.to_dict(), ignore=RUNTIME_KEYS | RESUME_ADJUSTABLE_KEYS)
    if differences:
        raise ConfigError(
            f'--resume {extra.resume}: the checkpoint was trained with another recipe; differing keys: '
            f'{_format_differences(differences)}. Resume with the run\'s own recipe (omit -c to reuse it) or start '
            f'a new run with another --output.')
    others = (set(saved) | set(cfg.to_dict())) - RESUME_ADJUSTABLE_KEYS
    for key, before, now in config_differences(saved, cfg.to_dict(), ignore=others):
        _logger.warning('resuming with %s=%r instead of %r: the run from here on differs from an uninterrupted one',
                        key, now, before)
    if cfg.epochs != saved.get('epochs'):
        _logger.warning('resuming with epochs=%s instead of %s: the schedule changes from here',
                        cfg.epochs, saved.get('epochs'))
    status = run_status(cfg.run_dir, dict(state, config=cfg.to_dict()))
    if status.finished_training:
        if status.exported:
            raise ConfigError(f'--resume {extra.resume}: the run has trained all {status.total_epochs} epochs and is '
                              f'exported to {cfg.run_dir / "export"}; raise --epochs to train further.')
        _logger.warning('%s finished training (%d epochs) but not its final evaluation and export: running them',
                        cfg.run_dir, status.trained_epochs)
    return cfg, state, folder, extra.stop_after


def check_run_folder(cfg: TrainConfig, resuming: bool) -> None:
    """A new run must not write into a folder that holds another run.

    Raises:
        ConfigError: naming the run's files, ``--resume`` and ``--output``.
    """
    present = [] if resuming else run_files(cfg.run_dir)
    if present and 'export' not in present and not (cfg.run_dir / 'checkpoints' / 'last').is_dir():
        # killed before its first checkpoint: there is nothing to resume, so say how to start it again
        raise ConfigError(f'{cfg.run_dir} holds a run stopped before its first checkpoint ({", ".join(present)}), '
                          f'so there is nothing to resume: remove {cfg.run_dir} and run the same command again, or '
                          'start a new run with another --output.')
    if present:
        raise ConfigError(f'{cfg.run_dir} already holds a run ({", ".join(present)}); continue it with --resume '
                          f'{cfg.run_dir}, or start a new run with another --output.')


def _is_primary_process() -> bool:
    return int(os.environ.get('RANK', '0')) == 0


def train(argv: Sequence[str]) -> None:
    """``sfsc-timm train`` without the error reporting: raises what goes wrong."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    from .trainer import Trainer  # late: keeps --help fast
    from .distributed import cleanup_distributed
    from .host_allocator import keep_freed_memory
    cfg, state, folder, stop_after = resolve_run(list(argv))
    keep_freed_memory()
    primary = _is_primary_process()
    if primary:
        check_output_folder_writable(cfg.run_dir)
    try:
        # only the first process writes; it alone holds the run folder
        with RunLock(cfg.run_dir) if primary else contextlib.nullcontext():
            if primary:
                check_run_folder(cfg, resuming=state is not None)
            Trainer(cfg, resume_state=state, resume_folder=folder, stop_after=stop_after).run()
    finally:
        cleanup_distributed()


def finish_run(run_dir: Path) -> Path:
    """The final evaluation and export of a run whose training finished but that was killed during them.

    Returns:
        ``run_dir / 'export'``.
    """
    train(['--resume', str(run_dir)])
    return Path(run_dir) / 'export'


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``sfsc-timm train`` and ``python -m sfsc_timm.train`` (also under torchrun)."""
    return run_command('sfsc-timm train', train, argv)
