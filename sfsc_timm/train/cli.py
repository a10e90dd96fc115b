""" ``sfsc-timm train``: parse the recipe and overrides, check a resume against its run, train. """
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .checkpointing import load_training_state, resolve_checkpoint
from .methods import METHODS
from .config import ConfigError, config_differences, config_from_dict, parse_args

__all__ = ['main', 'resolve_run']


def _format_differences(differences) -> str:
    return '; '.join(f'{key}: checkpoint {saved!r} vs now {now!r}' for key, saved, now in differences)


def resolve_run(argv: Optional[List[str]] = None):
    """(config, resume state, resume folder, stop_after) from the command line.

    Without ``-c``, a resume takes the run's own recipe (plus command-line overrides). With ``-c``, the recipe must
    match the checkpoint's in every key that changes the trained weights.

    Raises:
        ConfigError: unknown / invalid keys, or a resume from a run with another recipe (naming the differing keys).
    """
    given, extra = parse_args(argv)
    if extra.resume is None:
        return config_from_dict(given, where=extra.config or 'command line'), None, None, extra.stop_after
    folder = resolve_checkpoint(extra.resume)
    state = load_training_state(folder)
    saved = state['config']
    if given.get('output') is None:
        # continue in the run folder the checkpoint belongs to
        run_dir = folder.parent.parent if folder.parent.name == 'checkpoints' else Path(saved.get('output') or '.')
        given['output'] = str(run_dir)
    cfg = config_from_dict(given if extra.config else {**saved, **given}, where=extra.config or 'command line')
    differences = config_differences(saved, cfg.to_dict())
    if differences:
        raise ConfigError(
            f'--resume {extra.resume}: the checkpoint was trained with another recipe; differing keys: '
            f'{_format_differences(differences)}. Resume with the run\'s own recipe (omit -c to reuse it) or start '
            f'a new run with another --output.')
    if cfg.epochs != saved.get('epochs'):
        logging.getLogger(__name__).warning('resuming with epochs=%s instead of %s: the schedule changes from here',
                                            cfg.epochs, saved.get('epochs'))
    total = cfg.epochs * METHODS[cfg.method].num_stages
    if state['epoch'] >= total:
        raise ConfigError(f'--resume {extra.resume}: the checkpoint has already trained {state["epoch"]} of '
                          f'{total} epochs; raise --epochs to train further.')
    return cfg, state, folder, extra.stop_after


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``sfsc-timm train`` and ``python -m sfsc_timm.train`` (also under torchrun)."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    from .trainer import NonFiniteLossError, Trainer  # late: keeps --help fast
    from .distributed import cleanup_distributed
    try:
        cfg, state, folder, stop_after = resolve_run(argv)
        Trainer(cfg, resume_state=state, resume_folder=folder, stop_after=stop_after).run()
    except (ConfigError, FileNotFoundError) as err:
        print(f'sfsc-timm train: error: {err}', file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f'sfsc-timm train: stopped: {err}', file=sys.stderr)
        return 1
    finally:
        cleanup_distributed()
    return 0
