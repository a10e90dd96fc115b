"""``sfsc-timm eval``: the compatibility matrix of a checkpoint on a retrieval dataset."""
import re
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from ..atomic_io import write_json_atomically
from ..errors import CommandParser, UsageError, check_output_folder_writable, run_command
from .compat_report import format_compatibility_table, plot_compatibility_heatmap
from .compatibility import compatibility_matrix
from .reranking import QueryExpansion, RerankOptions

__all__ = ['build_parser', 'main']

# load_retrieval_data's keyword arguments as this command's flags, so its messages name what the user can type
_FLAG_NAMES = {'query_split': '--query-split', 'gallery_split': '--gallery-split',
               'query_per_class': '--query-per-class', 'root': '--data'}


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog='sfsc-timm eval', description='Compatibility matrix (mAP, query width x gallery width) of a checkpoint.')
    parser.add_argument('checkpoint', help="checkpoint folder (sfsc_timm.save, a run folder or its export/, or a "
                        "baseline's folder of width_* models) or hf-hub:ORG/NAME")
    parser.add_argument('--data', default='fashion_mnist',
                        help='fashion_mnist (default), a Market-1501-style folder, imagefolder:PATH or a Hub id')
    parser.add_argument('--query-split', default=None, help='Hub / imagefolder: the split of queries')
    parser.add_argument('--gallery-split', default=None, help='Hub / imagefolder: the gallery split (or the split '
                                                              'queries are carved from with --query-per-class)')
    parser.add_argument('--query-per-class', type=int, default=None,
                        help='carve this many queries per class from the gallery split')
    parser.add_argument('--max-query', type=int, default=None, help='evaluate on a class-balanced query subset')
    parser.add_argument('--max-gallery', type=int, default=None, help='... and gallery subset')
    parser.add_argument('--widths', type=float, nargs='+', default=None, help='default: every width of the checkpoint')
    parser.add_argument('--img-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help="input size (default: the checkpoint's pretrained_cfg)")
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--workers', type=int, default=0)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--output', type=Path, default=Path('eval_output'), help='folder for metrics.json + heatmap')
    add_reranking_arguments(parser)
    return parser


def add_reranking_arguments(parser: CommandParser) -> None:
    """``--rerank`` / ``--aqe`` and their parameters (fast-reid's TEST.RERANK / TEST.AQE names and defaults); shared
    by ``sfsc-timm eval`` and ``sfsc-timm index search``."""
    group = parser.add_argument_group('re-ranking (Zhong et al. 2017) and query expansion; off by default')
    group.add_argument('--rerank', action='store_true',
                       help='rank by k-reciprocal re-ranked distances (fast-reid TEST.RERANK)')
    group.add_argument('--rerank-k1', type=int, default=None, help='k1: size of the k-reciprocal neighbourhoods '
                                                                   f'(default: {RerankOptions.k1})')
    group.add_argument('--rerank-k2', type=int, default=None,
                       help=f'k2: neighbours averaged by the local query expansion (default: {RerankOptions.k2})')
    group.add_argument('--rerank-lambda', type=float, default=None,
                       help='lambda: weight of the original distance against the Jaccard distance, in [0, 1] '
                            f'(default: {RerankOptions.lambda_value})')
    group.add_argument('--aqe', action='store_true',
                       help='average query expansion first: each query averaged with its nearest gallery items, '
                            'weighted by similarity^alpha (fast-reid TEST.AQE)')
    group.add_argument('--aqe-k', type=int, default=None,
                       help=f'QE_K: gallery items averaged into each query (default: {QueryExpansion.k})')
    group.add_argument('--aqe-alpha', type=float, default=None,
                       help=f'ALPHA: exponent of the similarity weights, 0 for a plain mean (default: '
                            f'{QueryExpansion.alpha})')


def reranking_options(args) -> Tuple[Optional[RerankOptions], Optional[QueryExpansion]]:
    """The options ``add_reranking_arguments`` parsed; a parameter without its switch is refused, not ignored."""
    chosen = []
    for switch, flags, build in (
            ('--rerank', dict(k1='--rerank-k1', k2='--rerank-k2', lambda_value='--rerank-lambda'), RerankOptions),
            ('--aqe', dict(k='--aqe-k', alpha='--aqe-alpha'), QueryExpansion)):
        values = {name: getattr(args, flag[2:].replace('-', '_')) for name, flag in flags.items()}
        given = [flags[name] for name, value in values.items() if value is not None]
        if not getattr(args, switch[2:]):
            if given:
                raise UsageError(f'{given[0]} is a parameter of {switch}; add {switch} (or drop {given[0]}).')
            chosen.append(None)
            continue
        try:
            chosen.append(build(**{name: value for name, value in values.items() if value is not None}))
        except ValueError as e:
            name = str(e).split(' ', 1)[0]
            raise UsageError(f'{flags.get(name, switch)}: {e}') from None
    return chosen[0], chosen[1]


def _check_arguments(args) -> None:
    positive = dict(batch_size=args.batch_size, query_per_class=args.query_per_class, max_query=args.max_query,
                    max_gallery=args.max_gallery)
    for name, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f'--{name.replace("_", "-")} must be >= 1, got {value}.')
    if args.workers < 0:
        raise UsageError(f'--workers must be >= 0, got {args.workers}.')
    if args.img_size is not None and min(args.img_size) < 1:
        raise UsageError(f'--img-size takes a positive height and width, got {" ".join(map(str, args.img_size))}; '
                         'e.g. --img-size 256 128.')
    if args.device != 'cpu' and not args.device.startswith('cuda'):
        raise UsageError(f'--device {args.device!r} is not one of cpu, cuda, cuda:N.')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise UsageError(f'--device {args.device} was asked for but CUDA is not available here; use --device cpu.')
    check_output_folder_writable(args.output)


def _with_flag_names(error: ValueError) -> UsageError:
    # 'query_split=' -> '--query-split', 'query_per_class=N' -> '--query-per-class N'
    text = str(error)
    for name, flag in _FLAG_NAMES.items():
        text = re.sub(rf'(?<![\w/.-]){name}=(?=[\w\'"<])', f'{flag} ', text)
        text = re.sub(rf'(?<![\w/.-]){name}=' if name == 'root' else rf'(?<![\w/.-]){name}\b=?', flag, text)
    return UsageError(text)


def evaluate(argv: Sequence[str]) -> None:
    """``sfsc-timm eval`` without the error reporting: raises what goes wrong."""
    import sfsc_timm
    from sfsc_timm.data import build_transforms, load_retrieval_data, with_image_transform
    from sfsc_timm.data.transforms import resolve_data_cfg
    from sfsc_timm.data.image_check import check_images
    from sfsc_timm.models import ModelKind, model_kind

    args = build_parser().parse_args(list(argv))
    _check_arguments(args)  # everything that can be checked before minutes of evaluation
    rerank, query_expansion = reranking_options(args)
    start = time.perf_counter()
    # the one resolver (models/checkpoint_io.py): a checkpoint folder, a run folder's export/, a baseline's model set,
    # local-dir: or hf-hub:
    model = sfsc_timm.load(args.checkpoint).to(args.device)
    kind = model_kind(model)
    trained = model.widths if kind.switchable else (model.active_width,)
    widths = tuple(sorted(float(w) for w in args.widths)) if args.widths else tuple(trained)
    missing = [w for w in widths if w not in trained]
    if missing:
        raise UsageError(f'--widths {" ".join(f"{w:g}" for w in missing)}: the checkpoint has widths '
                         f'{" ".join(f"{w:g}" for w in trained)} only.')
    models = model if kind is not ModelKind.STATIC else {model.active_width: model}
    try:
        data = load_retrieval_data(args.data, query_split=args.query_split, gallery_split=args.gallery_split,
                                   query_per_class=args.query_per_class, max_query=args.max_query,
                                   max_gallery=args.max_gallery, need_train=False)
    except ValueError as e:
        raise _with_flag_names(e) from None
    check_images([('query', data.query), ('gallery', data.gallery)], data.name)
    # timm's img_size override takes one int; (H, W) goes in input_size
    overrides = dict(input_size=(3, *args.img_size), crop_pct=1.0) if args.img_size else dict(crop_pct=1.0)
    transform = build_transforms(model, train=False, **overrides)
    input_size = resolve_data_cfg(model, **overrides)['input_size'][1:]  # what the matrix was measured at
    result = compatibility_matrix(
        models, query=with_image_transform(data.query, transform),
        gallery=with_image_transform(data.gallery, transform), widths=widths, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device, rerank=rerank, query_expansion=query_expansion)
    summary = result.summary
    first = next(iter(result.metrics.values()))
    skipped, valid = first['num_skipped_queries'], first['num_valid_queries']
    print(f'{data.name}: {len(data.query)} queries, {len(data.gallery)} gallery items'
          f'{", cameras" if data.has_cameras else ""}; mAP (%), rows = query width, columns = gallery width'
          + _reranking_note(rerank, query_expansion))
    print(f'{skipped} of {len(data.query)} queries skipped (no gallery item of their identity'
          + (' from another camera' if data.has_cameras else '') + f'); {valid} evaluated')
    print(format_compatibility_table(result.matrix, result.widths))
    print(f'mean of matrix {summary["mean"] * 100:.2f}; self-compatible: {summary["self_compatible"]}'
          + (f' (violations: {summary["violations"]})' if summary['violations'] else ''))
    architecture = model.pretrained_cfg.get('architecture')
    payload = dict(result.to_dict(), checkpoint=str(args.checkpoint), dataset=data.name,
                   num_query=len(data.query), num_gallery=len(data.gallery), num_skipped_queries=skipped,
                   architecture=architecture, input_size=list(input_size), seconds=time.perf_counter() - start)
    # only when asked for, so that metrics.json without them stays what it always was
    if query_expansion is not None:
        payload['aqe'] = query_expansion.to_dict()
    if rerank is not None:
        payload['rerank'] = rerank.to_dict()
    write_json_atomically(args.output / 'metrics.json', payload)
    plot_compatibility_heatmap(result.matrix, result.widths, args.output / 'compatibility.png',
                               title=f'{architecture} on {data.name}: mAP (%)')
    print(f'wrote {args.output / "metrics.json"} and {args.output / "compatibility.png"}')


def _reranking_note(rerank: Optional[RerankOptions], query_expansion: Optional[QueryExpansion]) -> str:
    parts = []
    if query_expansion is not None:
        parts.append(f'average query expansion k={query_expansion.k} alpha={query_expansion.alpha:g}')
    if rerank is not None:
        parts.append(f'k-reciprocal re-ranking k1={rerank.k1} k2={rerank.k2} lambda={rerank.lambda_value:g}')
    return f' ({", then ".join(parts)})' if parts else ''


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm eval', evaluate, argv)
