"""The gallery index at scale: a gallery embedded at full width, queries from width 0.25, every index kind.

The gallery (``--size`` items, D = 128) is the glyph benchmark's test gallery (22,176 images, 672 identities never
trained on, typefaces as cameras) embedded at width 1.0 by a trained SFSC checkpoint (default: the
``sfsc_ce_ens_xtri`` run of ``benchmarks/results/experiments/glyphs_pretrained``, ``sfsc_resnet10t`` at 32x32),
extended with the same model's embeddings of augmented copies of those images (a random affine warp, contrast /
brightness jitter and pixel noise, ``--seed``), each copy keeping its source's identity and camera. The queries are
the benchmark's 2,016 query images embedded at width 0.25. Embeddings are cached (``--cache``), the copies in chunks,
so a stopped run resumes.

For each kind (flat, ivf-flat, ivf-pq, hnsw) built with ``sfsc_timm.index.build_index`` at its defaults: build
seconds (training, adding and writing the folder), bytes of the index folder, and for each search setting
(``nprobe``, ``ef_search``) queries/s over all queries (k = 10) and recall@10 against the exact search of the same
gallery. The operating point of a kind is its fastest setting with recall@10 >= 0.95; the target is one at >= 20x
the exact search's queries/s. On the real part (the 22,176 images alone) each kind is built again and the
cross-width mAP (queries w0.25, gallery w1.0) of its top 100 (the rest ranked last) is set against the exact
matrix's (``sfsc-timm eval``'s number, whole ranking) and the exact top 100; re-ranking and query expansion of the
exact index's hits are measured there too.

    .venv/bin/python benchmarks/perf/index_scale.py --size 50000        # a quick check (a few minutes)
    .venv/bin/python benchmarks/perf/index_scale.py                     # 1,000,000 (the README's numbers)
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import sfsc_timm
from sfsc_timm.data import build_transforms, load_glyphs, with_image_transform
from sfsc_timm.eval import rank_metrics_from_distances, retrieval_metrics
from sfsc_timm.eval.reranking import QueryExpansion, RerankOptions
from sfsc_timm.index import GalleryIndex, IndexSpec, build_index, checkpoint_identity, embeddings_from_array
from sfsc_timm.inference import load_embedding_model

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / 'benchmarks' / 'results' / 'perf' / 'index_scale.json'
CHECKPOINT = REPO / 'benchmarks' / 'results' / 'experiments' / 'glyphs_pretrained' / 'runs' / 'sfsc_ce_ens_xtri' \
    / 'seed_1' / 'export'
CHUNK = 16384  # augmented copies per cached file
SWEEPS = {'flat': [{}], 'ivf-flat': [dict(nprobe=p) for p in (8, 16, 32, 64, 128, 256)],
          'ivf-pq': [dict(nprobe=p) for p in (8, 16, 32, 64, 128)],
          'hnsw': [dict(ef_search=e) for e in (16, 32, 64, 128, 256)]}
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 20.0
MAP_TOP = 100


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random affine warp (rotation +-8 degrees, scale 0.9-1.1, shift +-6%, shear +-5 degrees), contrast and
    brightness jitter and pixel noise, on normalised (B, 3, H, W) images."""
    n = batch.shape[0]

    def uniform(low, high):
        return torch.rand(n, generator=generator) * (high - low) + low
    angle, shear = torch.deg2rad(uniform(-8, 8)), torch.deg2rad(uniform(-5, 5))
    scale = uniform(0.9, 1.1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle + shear) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle + shear) / scale
    theta[:, :, 2] = torch.stack([uniform(-0.12, 0.12), uniform(-0.12, 0.12)], 1)  # +-6% of the width, in [-1, 1]
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    warped = F.grid_sample(batch, grid, padding_mode='border', align_corners=False)
    contrast, brightness = uniform(0.8, 1.2)[:, None, None, None], uniform(-0.2, 0.2)[:, None, None, None]
    return warped * contrast + brightness + 0.05 * torch.randn(batch.shape, generator=generator)


@torch.inference_mode()
def _embed(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    return np.concatenate([F.normalize(net(images[i:i + batch_size]), dim=1).numpy()
                           for i in range(0, len(images), batch_size)])


def _load_images(dataset, transform) -> Dict[str, torch.Tensor]:
    loader = DataLoader(with_image_transform(dataset, transform), batch_size=1024)
    images, labels, cameras = [], [], []
    for image, label, camera, _ in loader:
        images.append(image)
        labels.append(label)
        cameras.append(camera)
    return dict(images=torch.cat(images), labels=torch.cat(labels).numpy(), cameras=torch.cat(cameras).numpy())


def embeddings(checkpoint: Path, size: int, query_width: float, seed: int, cache: Path) -> Dict[str, Any]:
    """Real queries and gallery, and ``size - G`` augmented copies of the gallery; cached under ``cache``."""
    gallery_net = load_embedding_model(str(checkpoint), 1.0)
    query_net = load_embedding_model(str(checkpoint), query_width)
    key = hashlib.sha256(f'{checkpoint_identity(gallery_net)} {query_width} {seed}'.encode()).hexdigest()[:12]
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)
    data = load_glyphs()
    transform = build_transforms(gallery_net, train=False, crop_pct=1.0)  # what sfsc-timm eval uses
    real = folder / 'real.npz'
    if not real.is_file():
        query, gallery = _load_images(data.query, transform), _load_images(data.gallery, transform)
        arrays = dict(query=_embed(query_net, query['images']), query_labels=query['labels'],
                      query_cameras=query['cameras'], gallery=_embed(gallery_net, gallery['images']),
                      gallery_labels=gallery['labels'], gallery_cameras=gallery['cameras'])
        np.savez(folder / '.real.tmp.npz', **arrays)
        os.replace(folder / '.real.tmp.npz', real)
    with np.load(real, allow_pickle=False) as stored:
        out = {name: stored[name] for name in stored.files}
    copies = max(0, size - len(out['gallery']))
    parts = []
    gallery_images = None
    for start in range(0, copies, CHUNK):
        count = min(CHUNK, copies - start)
        path = folder / f'copies_{start:08d}_{count}.npy'
        if not path.is_file():
            if gallery_images is None:
                gallery_images = _load_images(data.gallery, transform)['images']
                print(f'embedding {copies:,} augmented copies of the {len(gallery_images):,} gallery images...',
                      flush=True)
            began = time.perf_counter()
            sources = torch.arange(start, start + count) % len(gallery_images)
            generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
            images = torch.cat([_augment(gallery_images[sources[i:i + 1024]], generator)
                                for i in range(0, count, 1024)])
            np.save(folder / f'.{path.name}.tmp.npy', _embed(gallery_net, images), allow_pickle=False)
            os.replace(folder / f'.{path.name}.tmp.npy', path)
            print(f'  copies {start + count:,} / {copies:,} ({count / (time.perf_counter() - began):.0f} images/s)',
                  flush=True)
        parts.append(np.load(path, allow_pickle=False))
    real_count = min(size, len(out['gallery']))
    sources = np.arange(copies) % len(out['gallery'])
    out.update(
        all_gallery=np.concatenate([out['gallery'][:real_count]] + parts) if parts else out['gallery'][:real_count],
        all_labels=np.concatenate([out['gallery_labels'][:real_count], out['gallery_labels'][sources]]),
        real_count=real_count, copies=copies, gallery_net=gallery_net)
    return out


def _file(vectors: np.ndarray, width: float, identity: str, model: str):
    return embeddings_from_array(vectors, metadata=dict(model=model, checkpoint_id=identity, width=width))


def _timed_search(index: GalleryIndex, queries, k: int, setting: Dict[str, int], min_seconds: float = 1.0):
    """(result, queries/s): repeated until ``min_seconds`` have passed, the best round counts."""
    rounds, best, result = 0, float('inf'), None
    began = time.perf_counter()
    while rounds == 0 or (time.perf_counter() - began < min_seconds and rounds < 20):
        start = time.perf_counter()
        result = index.search(queries, k, **setting)
        best = min(best, time.perf_counter() - start)
        rounds += 1
    return result, len(queries) / best


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(found, exact)]))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def _map_from_hits(result, num_gallery: int, data: Dict[str, Any], by_rerank: bool = False) -> float:
    """mAP with the hits ranked first in their order and every other item last (pessimistic among themselves)."""
    distances = np.full((result.item_ids.shape[0], num_gallery), np.inf, dtype=np.float64)
    rows, ranks = np.nonzero(result.item_ids >= 0)
    distances[rows, result.item_ids[rows, ranks]] = ranks  # the hit's rank orders it
    return rank_metrics_from_distances(
        distances, query_labels=data['query_labels'], gallery_labels=data['gallery_labels'][:num_gallery],
        query_cameras=data['query_cameras'], gallery_cameras=data['gallery_cameras'][:num_gallery])['mAP']


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=1_000_000, help='gallery items (default: 1,000,000)')
    parser.add_argument('--checkpoint', type=Path, default=CHECKPOINT, help='a trained glyph SFSC checkpoint (D=128)')
    parser.add_argument('--query-width', type=float, default=0.25)
    parser.add_argument('--kinds', nargs='+', default=list(SWEEPS), choices=list(SWEEPS))
    parser.add_argument('--seed', type=int, default=0, help='seed of the augmented copies')
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'sfsc_timm' / 'index_scale')
    parser.add_argument('--work', type=Path, default=None, help='where index folders are built (default: a temp dir)')
    parser.add_argument('--output', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.checkpoint / 'model.safetensors').is_file():
        raise SystemExit(f'{args.checkpoint} holds no model.safetensors: train the glyph table first '
                         '(benchmarks/experiments/paper_table.py --benchmark glyphs_pretrained) or pass --checkpoint.')
    torch.manual_seed(0)
    began = time.perf_counter()
    data = embeddings(args.checkpoint, args.size, args.query_width, args.seed, args.cache)
    embed_seconds = time.perf_counter() - began
    net = data.pop('gallery_net')
    identity, model = checkpoint_identity(net), str(args.checkpoint)
    queries = _file(data['query'], args.query_width, identity, model)
    gallery = _file(data['all_gallery'], 1.0, identity, model)
    real = _file(data['gallery'][:data['real_count']], 1.0, identity, model)
    work = Path(args.work or tempfile.mkdtemp(prefix='index_scale_'))
    work.mkdir(parents=True, exist_ok=True)
    print(f'gallery {len(gallery):,} x {gallery.embed_dim} ({data["real_count"]:,} real, {data["copies"]:,} augmented '
          f'copies), {len(queries):,} queries at width {args.query_width:g}; faiss {faiss.__version__}, '
          f'{faiss.omp_get_max_threads()} threads', flush=True)

    kinds, exact_hits, exact_qps = {}, None, None
    for kind in ['flat'] + [k for k in args.kinds if k != 'flat']:
        start = time.perf_counter()
        index = build_index(gallery, work / kind, IndexSpec(kind), force=True)
        build_seconds = time.perf_counter() - start
        entry = dict(parameters=index.spec.parameters(), build_seconds=build_seconds,
                     bytes=_folder_bytes(work / kind), searches=[])
        for setting in SWEEPS[kind]:
            result, qps = _timed_search(index, queries, 10, setting, min_seconds=0 if kind == 'flat' else 1.0)
            if kind == 'flat':
                exact_hits, exact_qps = result.item_ids, qps
            recall = _recall(result.item_ids, exact_hits)
            entry['searches'].append(dict(setting, queries_per_second=qps, speedup=qps / exact_qps,
                                          recall_at_10=recall))
            print(f'{kind:<8} {json.dumps(setting):<20} {qps:10,.0f} queries/s  x{qps / exact_qps:6.1f}  '
                  f'recall@10 {recall:.4f}', flush=True)
        good = [s for s in entry['searches'] if s['recall_at_10'] >= TARGET_RECALL]
        entry['operating_point'] = max(good, key=lambda s: s['queries_per_second']) if good else None
        del index
        shutil.rmtree(work / kind)
        kinds[kind] = entry
        print(f'{kind:<8} built in {build_seconds:.1f} s, {entry["bytes"] / 2**20:,.1f} MiB', flush=True)

    # the real part alone: cross-width mAP from each kind's top 100, against the exact matrix
    real_data = dict(data, gallery_labels=data['gallery_labels'][:data['real_count']],
                     gallery_cameras=data['gallery_cameras'][:data['real_count']])
    exact_map = retrieval_metrics(query=data['query'], gallery=real.vectors, query_labels=data['query_labels'],
                                  gallery_labels=real_data['gallery_labels'], query_cameras=data['query_cameras'],
                                  gallery_cameras=real_data['gallery_cameras'])['mAP']
    real_part = dict(num_gallery=len(real), exact_map_whole_ranking=exact_map, kinds={})
    for kind in ['flat'] + [k for k in args.kinds if k != 'flat']:
        index = build_index(real, work / f'real_{kind}', IndexSpec(kind), force=True)
        result = index.search(queries, MAP_TOP)
        real_part['kinds'][kind] = dict(parameters=index.spec.parameters(),
                                        map_top100=_map_from_hits(result, len(real), real_data))
        if kind == 'flat':
            for name, options in (('rerank', dict(rerank=RerankOptions())), ('aqe', dict(query_expansion=
                                  QueryExpansion())), ('aqe_rerank', dict(rerank=RerankOptions(),
                                                                           query_expansion=QueryExpansion()))):
                start = time.perf_counter()
                reranked = index.search(queries, MAP_TOP, **options)
                real_part['kinds'][kind][f'map_top100_{name}'] = _map_from_hits(reranked, len(real), real_data)
                real_part['kinds'][kind][f'{name}_queries_per_second'] = len(queries) / (time.perf_counter() - start)
        print(f'real part {kind:<8} mAP@{MAP_TOP} {real_part["kinds"][kind]["map_top100"]:.4f} (exact whole ranking '
              f'{exact_map:.4f})', flush=True)
        shutil.rmtree(work / f'real_{kind}')
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    met = [k for k, e in kinds.items() if k != 'flat' and e['operating_point']
           and e['operating_point']['speedup'] >= TARGET_SPEEDUP]
    payload = dict(
        command='python benchmarks/perf/index_scale.py' + (f' --size {args.size}' if args.size != 1_000_000 else ''),
        size=len(gallery), embed_dim=gallery.embed_dim, real_gallery=data['real_count'],
        augmented_copies=data['copies'], queries=len(queries), query_width=args.query_width, gallery_width=1.0,
        checkpoint=str(args.checkpoint.relative_to(REPO) if args.checkpoint.is_relative_to(REPO) else args.checkpoint),
        checkpoint_id=identity, embedding_seconds=embed_seconds, exact_queries_per_second=exact_qps,
        target=dict(recall_at_10=TARGET_RECALL, speedup=TARGET_SPEEDUP, met_by=met), kinds=kinds, real_part=real_part,
        machine=dict(cpus=os.cpu_count(), faiss_threads=faiss.omp_get_max_threads(), torch=torch.__version__,
                     faiss=faiss.__version__, sfsc_timm=sfsc_timm.__version__, python=platform.python_version()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + '\n')
    print(f'target recall@10 >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:g}x exact: {met or "not met"}; wrote '
          f'{args.output}')


if __name__ == '__main__':
    main()
