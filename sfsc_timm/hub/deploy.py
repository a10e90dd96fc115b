"""``sfsc-timm export-width``: one width of a supernet as a deployable embedding model (ONNX, TorchScript, .pt2,
or a timm / Hugging Face folder that ``timm.create_model('local-dir:...')`` and ``transformers.AutoModel`` load).

What is exported is the **embedding model**: the static sub-model at that width with its training classifier removed
(``reset_classifier(0)``), so ``model(images)`` is the (B, D) embedding ``forward_head(x, pre_logits=True)``, the same
D at every width. It is not L2-normalised; normalise it before cosine ranking, as the evaluation does. The batch axis
is dynamic. Every export is checked against PyTorch on sample batches of two sizes (ONNX with onnxruntime, the folder
by loading it back with timm) and written only if the largest difference is within the tolerance; the file (folder)
is written next to its target and renamed into place.
"""
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import timm
import torch
from torch import nn

from ..atomic_io import check_destination, staged_folder, write_file_atomically
from ..errors import CommandParser, at_least, check_output_folder_writable, run_command
from ..models import load_embedding_model
from ..models import save
from ..models.checkpoint import CHECKPOINT_FILES

__all__ = ['FORMATS', 'DeployError', 'DeployResult', 'load_embedding_model', 'export_width', 'build_parser', 'main']

FORMATS = {'onnx': '.onnx', 'torchscript': '.pt', 'export': '.pt2', 'hf': ''}  # hf: a folder
INPUT_NAME, OUTPUT_NAME = 'images', 'embeddings'
CHECK_BATCH_SIZES = (1, 3)  # differ from the tracing batch (2): proves the dynamic batch axis
METADATA_NAME = 'sfsc.json'


class DeployError(RuntimeError):
    """An export that failed or does not reproduce PyTorch's embeddings."""


@dataclass
class DeployResult:
    path: Path
    format: str
    width: float
    embed_dim: int
    input_size: Tuple[int, ...]
    max_abs_diff: float
    checked_with: str


def _metadata(model: nn.Module, source: str) -> Dict[str, str]:
    cfg = model.pretrained_cfg
    return dict(source=source, architecture=str(cfg.get('architecture')), width=str(model.active_width),
                widths=json.dumps(list(model.source_widths)), embed_dim=str(model.embed_dim),
                input_size=json.dumps(list(cfg['input_size'])), mean=json.dumps(list(cfg['mean'])),
                std=json.dumps(list(cfg['std'])), interpolation=str(cfg.get('interpolation')),
                crop_pct=str(cfg.get('crop_pct')), output='embedding (not L2-normalised)')


def _export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, metadata: Dict[str, str]) -> Callable:
    program = torch.onnx.export(
        model, (sample,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=True, external_data=False,
        dynamic_shapes=({0: torch.export.Dim('batch', min=1)},), verbose=False)
    program.model.metadata_props.update({f'sfsc.{k}': v for k, v in metadata.items()})
    program.save(str(path), external_data=False)
    try:
        import onnxruntime
    except ImportError:
        raise DeployError('onnxruntime is needed to check the ONNX export: pip install onnxruntime') from None
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def _export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path, metadata: Dict[str, str]) -> Callable:
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(path), _extra_files={METADATA_NAME: json.dumps(metadata)})
    reloaded = torch.jit.load(str(path))
    return lambda x: reloaded(x)


def _export_program(model: nn.Module, sample: torch.Tensor, path: Path, metadata: Dict[str, str]) -> Callable:
    program = torch.export.export(model, (sample,), dynamic_shapes=({0: torch.export.Dim('batch', min=1)},))
    torch.export.save(program, str(path), extra_files={METADATA_NAME: json.dumps(metadata)})
    reloaded = torch.export.load(str(path)).module()
    return lambda x: reloaded(x)


def _export_folder(model: nn.Module, sample: torch.Tensor, path: Path, metadata: Dict[str, str]) -> Callable:
    # model.safetensors + config.json of the static embedding model: timm's layout, which transformers' TimmWrapper
    # reads (AutoModel, pipeline('image-feature-extraction')) once sfsc_timm is imported
    save(model, path)
    reloaded = timm.create_model(f'local-dir:{path}', pretrained=True).eval()
    return lambda x: reloaded(x)


def _is_own_onnx(path: Path) -> bool:
    """An ONNX model carrying this exporter's ``sfsc.*`` metadata (protobuf is parsed, nothing is executed)."""
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a protobuf, not ONNX, or onnx missing: not recognisably ours
        return False
    return any(prop.key.startswith('sfsc.') for prop in model.metadata_props)


def _is_own_archive(path: Path) -> bool:
    """A TorchScript / torch.export zip archive carrying this exporter's metadata file (only its names are read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f'/extra/{METADATA_NAME}') for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_OWN_FILES = {'onnx': _is_own_onnx, 'torchscript': _is_own_archive, 'export': _is_own_archive}

_EXPORTERS = {'onnx': _export_onnx, 'torchscript': _export_torchscript, 'export': _export_program,
              'hf': _export_folder}


def export_width(source: Union[str, Path], width: float, format: str = 'onnx',
                 output: Optional[Union[str, Path]] = None, atol: float = 1e-4, force: bool = False) -> DeployResult:
    """Export the embedding model at ``width`` of ``source`` and check it against PyTorch.

    Args:
        source: a run or checkpoint folder, ``hf-hub:ORG/NAME``, or anything else
            :func:`sfsc_timm.inference.load_embedding_model` takes.
        width: one of the checkpoint's widths.
        format: ``onnx`` (checked with onnxruntime), ``torchscript`` (``torch.jit.script``), ``export``
            (``torch.export``, saved with ``torch.export.save`` as .pt2) or ``hf`` (a folder: model.safetensors and
            config.json of the static embedding model, for timm's ``local-dir:``, the Hub and transformers).
        output: the file (folder) to write; default ``ARCH_wWIDTH.EXT`` (``ARCH_wWIDTH``) in the working folder.
        atol: the largest absolute difference from PyTorch's embeddings that is accepted.
        force: replace ``output`` even if it holds what this export does not write (a folder of the user's files,
            a file that is not an export of this format by export-width).

    Raises:
        DeployError: the exported model's embeddings differ from PyTorch's by more than ``atol`` (nothing is written).
        DestinationInUse: ``output`` holds the user's files (nothing is written).
    """
    if format not in FORMATS:
        raise ValueError(f'format must be one of {", ".join(FORMATS)}, got {format!r}.')
    model = load_embedding_model(source, width)
    cfg = model.pretrained_cfg
    path = Path(output) if output is not None else Path(f'{cfg.get("architecture")}_w{float(width)}{FORMATS[format]}')
    # the user's files are never replaced: an hf folder may replace only a checkpoint's two files, a file export
    # only a file of its format that it wrote (never a folder)
    check_destination(path, CHECKPOINT_FILES, folder=format == 'hf', force=force,
                      fix='pass another --output, or --force to replace it', own_file=_OWN_FILES.get(format),
                      own_kind=f'a {format} file export-width wrote')
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    input_size = tuple(cfg['input_size'])
    sample = torch.randn(2, *input_size, generator=generator)
    checks = [torch.randn(b, *input_size, generator=generator) for b in CHECK_BATCH_SIZES]
    found = {}

    def write_and_check(temp: Path) -> None:
        run_exported = _EXPORTERS[format](model, sample, temp, _metadata(model, str(source)))
        found['max_diff'], found['shape'] = _compare(model, run_exported, checks)
        if not found['max_diff'] <= atol:
            raise DeployError(f'the {format} export of width {width} differs from PyTorch by up to '
                              f'{found["max_diff"]:.3g} (tolerance {atol:g}); nothing was written to {path}.')

    if format == 'hf':  # a folder, built beside the target and swapped in whole
        with staged_folder(path) as folder:
            write_and_check(folder)
    else:
        write_file_atomically(path, write_and_check, suffix=FORMATS[format])
    max_diff, shape = found['max_diff'], found['shape']
    checked_with = {'onnx': 'onnxruntime', 'hf': "timm.create_model('local-dir:...')"}.get(
        format, f'the reloaded {format} file')
    return DeployResult(path=path, format=format, width=float(width), embed_dim=shape[-1], input_size=input_size,
                        max_abs_diff=max_diff,
                        checked_with=checked_with)


@torch.inference_mode()
def _compare(model: nn.Module, run_exported: Callable, checks: List[torch.Tensor]) -> Tuple[float, Tuple[int, ...]]:
    max_diff, shape = 0.0, ()
    for x in checks:
        expected, got = model(x), run_exported(x)
        if got.shape != expected.shape:
            raise DeployError(f'the export returns shape {tuple(got.shape)} for a batch of {x.shape[0]}, PyTorch '
                              f'{tuple(expected.shape)}: the batch axis is not dynamic.')
        diff = (got.float() - expected.float()).abs().max().item()
        # NaN compares as neither larger nor smaller: a non-finite output is a mismatch, never a difference of 0
        finite = bool(torch.isfinite(got).all()) and bool(torch.isfinite(expected).all())
        max_diff = max(max_diff, diff if finite else math.inf)
        shape = tuple(expected.shape)
    return max_diff, shape


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm export-width',
        description='Export the embedding model of one width (static sub-model, no classifier) for deployment, '
                    'checked against PyTorch on sample batches.')
    parser.add_argument('source', help='run or checkpoint folder, or hf-hub:ORG/NAME')
    parser.add_argument('--width', type=float, required=True, help='one of the checkpoint\'s widths')
    parser.add_argument('--format', choices=list(FORMATS), default='onnx',
                        help='onnx (checked with onnxruntime), torchscript (torch.jit.script), export '
                             '(torch.export, .pt2) or hf (a timm / transformers folder)')
    parser.add_argument('--output', type=Path, default=None,
                        help='file (folder for hf) to write (default: ARCH_wWIDTH.EXT)')
    parser.add_argument('--atol', type=at_least(0.0), default=1e-4, help='largest accepted difference from PyTorch')
    parser.add_argument('--force', action='store_true',
                        help='replace --output even if it holds files this export does not write')
    return parser


def _export_width(argv: List[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.output is not None:
        check_output_folder_writable(args.output.parent, '--output', file=args.output)
    result = export_width(args.source, args.width, args.format, args.output, atol=args.atol, force=args.force)
    print(f'wrote {result.path}: width {result.width}, {result.format}, input (B, '
          f'{", ".join(map(str, result.input_size))}) -> embeddings (B, {result.embed_dim}); '
          f'max abs diff vs PyTorch {result.max_abs_diff:.3g} ({result.checked_with}, batches of '
          f'{" and ".join(map(str, CHECK_BATCH_SIZES))})')


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm export-width', _export_width, argv)

