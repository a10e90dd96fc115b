"""Why are some supernets' widths compatible and others not? Measures, for the paper-table runs, how much of each
width's embedding lies in the shared classifier's row space, and how well the same image's embeddings agree across
widths (cosine of width w with the full width).

A shared linear classifier only constrains the embedding's projection onto its C rows; with D > C the other D - C
dimensions are free to differ between widths, and cosine retrieval across widths sees them.

    .venv/bin/python benchmarks/experiments/classifier_subspace.py      # after benchmarks/experiments/paper_table.py
"""
import argparse
from pathlib import Path

import torch

import sfsc_timm
from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.data import build_transforms, load_retrieval_data, with_image_transform
from sfsc_timm.eval import extract_embeddings

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / 'benchmarks' / 'results' / 'experiments'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=Path, default=RESULTS / 'paper_table' / 'runs')
    parser.add_argument('--methods', nargs='+',
                        default=['sfsc', 'sfsc_no_proj', 'sfsc_no_unc', 'bct_s', 'asymmetric_s'])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-query', type=int, default=500)
    parser.add_argument('--out', type=Path, default=RESULTS / 'classifier_subspace.json')
    args = parser.parse_args()
    data = load_retrieval_data('fashion_mnist', max_query=args.max_query, max_train=10, max_gallery=10)
    results = {}
    for method in args.methods:
        folder = args.runs / method / f'seed_{args.seed}' / 'export'
        if not (folder / 'model.safetensors').is_file():
            print(f'{method}: no run at {folder}, skipped')
            continue
        net = sfsc_timm.load(folder).eval()
        images = with_image_transform(data.query, build_transforms(net, train=False, crop_pct=1.0))
        weight = net.head.weight.detach()  # (C, D), shared by every width
        basis, _ = torch.linalg.qr(weight.T)  # orthonormal basis of the classifier's row space, (D, C)
        embeddings = {}
        for width in net.widths:
            with net.width(width):
                embeddings[width] = extract_embeddings(net, images, progress=False).features
        row = {}
        for width, emb in embeddings.items():
            in_span = (emb @ basis).pow(2).sum(1) / emb.pow(2).sum(1)
            cosine = torch.nn.functional.cosine_similarity(emb, embeddings[1.0]).mean()
            row[f'{width:g}'] = dict(energy_in_classifier_span=float(in_span.mean()), cosine_to_full=float(cosine),
                                     mean_norm=float(emb.norm(dim=1).mean()))
        results[method] = row
        print(f'{method:>13}: ' + '  '.join(
            f'w={w}: span {v["energy_in_classifier_span"]:.2f}, cos(full) {v["cosine_to_full"]:.2f}, '
            f'|e| {v["mean_norm"]:.1f}' for w, v in row.items()))
    write_json_atomically(args.out, dict(seed=args.seed, num_images=len(data.query), methods=results))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
