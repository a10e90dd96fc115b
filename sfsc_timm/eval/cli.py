"""``sfsc-timm eval``: the compatibility matrix of a checkpoint on a retrieval dataset."""
import argparse
import time
from pathlib import Path
from typing import List, Optional

import torch

from ..atomic_io import write_json_atomically
from .compat_report import format_compatibility_table, plot_compatibility_heatmap
from .compatibility import compatibility_matrix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sfsc-timm eval', description='Compatibility matrix (mAP, query width x gallery width) of a checkpoint.')
    parser.add_argument('checkpoint', help="checkpoint folder (sfsc_timm.save / a run's export, or a baseline's folder "
                        "of width_* models) or hf-hub:ORG/NAME")
    parser.add_argument('--data', default='fashion_mnist',
                        help='fashion_mnist (default), a Market-1501-style folder, imagefolder:PATH or a Hub id')
    parser.add_argument('--query-split', default=None)
    parser.add_argument('--gallery-split', default=None)
    parser.add_argument('--query-per-class', type=int, default=None)
    parser.add_argument('--max-query', type=int, default=None, help='evaluate on a class-balanced query subset')
    parser.add_argument('--max-gallery', type=int, default=None, help='... and gallery subset')
    parser.add_argument('--widths', type=float, nargs='+', default=None, help='default: every width of the checkpoint')
    parser.add_argument('--img-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help="input size (default: the checkpoint's pretrained_cfg)")
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--workers', type=int, default=0)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--output', type=Path, default=Path('eval_output'), help='folder for metrics.json + heatmap')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    import sfsc_timm
    from sfsc_timm.models import ModelSet, is_model_set_folder
    from sfsc_timm.data import build_transforms, load_retrieval_data, with_image_transform

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if is_model_set_folder(args.checkpoint):  # one model per width (the independent / BCT / asymmetric baselines)
        model = ModelSet.load(args.checkpoint).to(args.device)
    else:
        model = sfsc_timm.load(args.checkpoint).to(args.device)
    widths = tuple(args.widths or getattr(model, 'widths', (model.active_width,)))
    models = model if hasattr(model, 'set_width') else {model.active_width: model}
    data = load_retrieval_data(args.data, query_split=args.query_split, gallery_split=args.gallery_split,
                               query_per_class=args.query_per_class, max_query=args.max_query,
                               max_gallery=args.max_gallery)
    overrides = dict(img_size=tuple(args.img_size), crop_pct=1.0) if args.img_size else dict(crop_pct=1.0)
    transform = build_transforms(model, train=False, **overrides)
    result = compatibility_matrix(
        models, query=with_image_transform(data.query, transform),
        gallery=with_image_transform(data.gallery, transform), widths=widths, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device)
    summary = result.summary
    print(f'{data.name}: {len(data.query)} queries, {len(data.gallery)} gallery items'
          f'{", cameras" if data.has_cameras else ""}; mAP (%), rows = query width, columns = gallery width')
    print(format_compatibility_table(result.matrix, result.widths))
    print(f'mean of matrix {summary["mean"] * 100:.2f}; self-compatible: {summary["self_compatible"]}'
          + (f' (violations: {summary["violations"]})' if summary['violations'] else ''))
    args.output.mkdir(parents=True, exist_ok=True)
    payload = dict(result.to_dict(), checkpoint=str(args.checkpoint), dataset=data.name,
                   num_query=len(data.query), num_gallery=len(data.gallery),
                   architecture=model.pretrained_cfg.get('architecture'), seconds=time.perf_counter() - start)
    write_json_atomically(args.output / 'metrics.json', payload)
    plot_compatibility_heatmap(result.matrix, result.widths, args.output / 'compatibility.png',
                               title=f'{payload["architecture"]} on {data.name}: mAP (%)')
    print(f'wrote {args.output / "metrics.json"} and {args.output / "compatibility.png"}')
    return 0
