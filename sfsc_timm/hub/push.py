"""``sfsc-timm push``: upload an export (made here if needed) to the Hugging Face Hub with huggingface_hub.

The token is whatever huggingface_hub finds (``HF_TOKEN``, ``hf auth login``); it is checked before any request and
never printed. The folder being pushed is never changed: an export made for another repository is exported again
into ``--export-dir`` (a new folder), and a run folder is exported into ``--export-dir`` (default ``RUN/hub``); both
are said on the terminal. A failed upload says which step failed and which local folder holds the export.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

from huggingface_hub import HfApi, ModelCard, constants, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .. import __version__
from ..errors import CommandParser, UsageError, run_command
from ..models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .export import CARD_NAME, EXPORT_FILES, export_run
from .model_card import CARD_METADATA_KEY, card_repo_id
from .run_folder import ExportError

__all__ = ['PushError', 'PushResult', 'push', 'prepare_export', 'is_export', 'check_can_push', 'build_parser', 'main']


class PushError(RuntimeError):
    """The upload cannot start (no token, offline, bad repo id) or a Hub request failed."""


class BadRepoId(PushError, UsageError):
    """The repository id cannot name a Hub repository (bad input: exit status 2)."""


@dataclass
class PushResult:
    """What was pushed: huggingface_hub's ``CommitInfo``, the local export folder, its files and widths."""
    commit: Any
    folder: Path
    files: List[str]
    widths: Tuple[float, ...]


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is an ``sfsc-timm export`` output (weights, config and a model card)."""
    return all((folder / name).is_file() for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME))


def prepare_export(source: Union[str, Path], repo_id: str, export_dir: Optional[Union[str, Path]] = None,
                   **export_kwargs) -> Path:
    """The export folder to upload for ``repo_id``: ``source`` itself when it is an export made for that repository,
    else a fresh export into ``export_dir`` (for a run folder, default ``SOURCE/hub``). ``source`` is never changed.

    Raises:
        UsageError: ``source`` is an export made for another (or no) repository and no ``export_dir`` is given.
    """
    source = Path(source)
    if is_export(source):
        card = ModelCard.load(source / CARD_NAME)
        if card.data.library_name != 'timm' or not isinstance(getattr(card.data, CARD_METADATA_KEY, None), dict):
            raise ExportError(f'{source / CARD_NAME} is not an sfsc-timm model card. Export the run with: sfsc-timm '
                              f'export RUN_DIR OUT_DIR --repo-id {repo_id}')
        made_for = card_repo_id(card)
        if made_for == repo_id:
            return source
        if export_dir is None or Path(export_dir).resolve() == source.resolve():
            raise UsageError(
                f'{source} was exported for {made_for or "no repository"}, not {repo_id}: its model card loads from '
                f'there. Export it for {repo_id} into a new folder first, e.g. push with --export-dir '
                f'{source.parent / (source.name + "-" + repo_id.replace("/", "-"))} (the card is rendered again '
                f'from the template: hand edits to {source / CARD_NAME} are not carried over).')
        print(f'{source} was exported for {made_for or "no repository"}; exporting it for {repo_id} into '
              f'{export_dir} (its model card rendered again; {source} is left as it is)')
        return export_run(source, export_dir, repo_id=repo_id, **export_kwargs)
    target = Path(export_dir) if export_dir is not None else source / 'hub'
    print(f'exporting {source} to {target}')
    return export_run(source, target, repo_id=repo_id, **export_kwargs)


def check_can_push(repo_id: str) -> None:
    """Everything that can be checked without a request: the repository id, offline mode, a token."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise BadRepoId(f'--repo-id {repo_id!r} is not a valid repository id ({e}); use ORG/NAME.') from None
    if '/' not in repo_id:
        raise BadRepoId(f'--repo-id {repo_id!r} has no namespace; use ORG/NAME (your user name or an organisation).')
    if constants.HF_HUB_OFFLINE:
        raise PushError('HF_HUB_OFFLINE is set, so huggingface_hub makes no requests; unset it to push.')
    if get_token() is None:
        raise PushError('No Hugging Face token found. Set HF_TOKEN to a token with write access '
                        '(https://huggingface.co/settings/tokens) or log in once with `hf auth login`, then push '
                        'again.')


def push(
        source: Union[str, Path],
        repo_id: str,
        *,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        export_dir: Optional[Union[str, Path]] = None,
        **export_kwargs,
):
    """Create ``repo_id`` on the Hub (if needed) and upload the export of ``source`` to it.

    Args:
        source: an export folder (``sfsc-timm export``) or anything ``sfsc-timm export`` accepts.
        repo_id: ``ORG/NAME``.
        private: create the repository private (an existing repository keeps its visibility).
        revision: the branch to commit to (created from the default branch if missing); default: main.
        commit_message: default: names the architecture and widths.
        export_dir: where a run folder is exported first; default ``SOURCE/hub``.
        **export_kwargs: passed to :func:`sfsc_timm.hub.export.export_run`.

    Returns:
        The commit, the export folder that was uploaded, its files and the widths.

    Raises:
        PushError: nothing to push with (token, offline, repo id), or a request failed; the local export is intact.
    """
    if not Path(source).exists():
        raise FileNotFoundError(f'{source} does not exist; pass an export folder (sfsc-timm export) or a run folder.')
    check_can_push(repo_id)
    folder = prepare_export(source, repo_id, export_dir, **export_kwargs)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name in EXPORT_FILES)
    card = ModelCard.load(folder / CARD_NAME)
    meta = getattr(card.data, CARD_METADATA_KEY)
    message = commit_message or (f'Upload {meta["architecture"]} SFSC supernet (widths '
                                 f'{", ".join(str(w) for w in meta["widths"])})')
    api = HfApi(library_name='sfsc-timm', library_version=__version__)
    step = 'creating the repository'
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
        if revision:
            step = f'creating branch {revision!r}'
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type='model')
        step = 'uploading the files'
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type='model', revision=revision,
                                   commit_message=message, allow_patterns=files)
    except Exception as e:  # huggingface_hub / httpx errors, OSError; chained below for the traceback
        written = '' if folder == Path(source) else '; it was written by this command'
        raise PushError(f'Push to {repo_id} failed while {step}: {type(e).__name__}: {e}. The export {folder} '
                        f'({", ".join(files)}) is intact{written}; run the same command to retry.') from e
    return PushResult(commit=commit, folder=folder, files=files, widths=tuple(meta['widths']))


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm push',
        description='Upload a trained supernet (exported first if needed) to the Hugging Face Hub. The token comes '
                    'from HF_TOKEN or `hf auth login`.')
    parser.add_argument('source', type=Path, help='an export folder (sfsc-timm export) or a run folder')
    parser.add_argument('--repo-id', required=True, help='ORG/NAME on the Hub')
    parser.add_argument('--private', action='store_true', help='create the repository private')
    parser.add_argument('--revision', default=None, help='branch to commit to (created if missing); default main')
    parser.add_argument('--commit-message', default=None)
    parser.add_argument('--export-dir', type=Path, default=None, help='where a run folder is exported first '
                                                                      '(default: SOURCE/hub)')
    parser.add_argument('--license', default=None, help='for an export made here: the weights\' license')
    parser.add_argument('--latency-repeats', type=int, default=20, help='for an export made here: forward passes '
                                                                        'timed per width')
    return parser


def _push(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    result = push(args.source, args.repo_id, private=args.private, revision=args.revision,
                  commit_message=args.commit_message, export_dir=args.export_dir, license=args.license,
                  latency_repeats=args.latency_repeats)
    print(f'pushed {", ".join(result.files)} from {result.folder}: {result.commit.commit_url}')
    print(f"load a width ({', '.join(map(str, result.widths))}): import timm, sfsc_timm; "
          f"timm.create_model('hf-hub:{args.repo_id}', width={min(result.widths)}, pretrained=True)")


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm push', _push, argv)
