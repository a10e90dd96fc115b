"""Throughput of ``sfsc-timm embed`` at each width: images per second from JPEG files to the Parquet file.

A folder of synthetic person-crop JPEGs (128x64, Market-1501's size) is embedded by ``sfsc_resnet50`` (256x128
input, D = 2048) at every width with :func:`sfsc_timm.inference.embed_images`: decoding, resizing, normalising, the
forward pass of the static sub-model and writing the Parquet file. The widths are run in turn, ``--repeats`` rounds,
and the median is reported, with the forward pass alone (the same batches, already decoded) beside it. The weights
are random: throughput does not depend on their values.

    .venv/bin/python benchmarks/perf/embed.py                    # 256 images, batch 32, 3 rounds (README)
    .venv/bin/python benchmarks/perf/embed.py --images 64 --repeats 1 --model sfsc_resnet18   # a quick look
"""
import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import sfsc_timm
from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.inference import embed_images, load_embedding_model

RESULTS = Path(__file__).resolve().parents[1] / 'results' / 'perf' / 'embed.json'


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        # smooth random shapes compress like photographs; pure noise would make JPEG decoding unrealistically slow
        base = rng.integers(0, 255, (8, 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((64, 128), Image.BILINEAR)
        image.save(folder / f'{i:05d}.jpg', quality=90)


@torch.inference_mode()
def forward_images_per_second(model: torch.nn.Module, batch: torch.Tensor, repeats: int = 3) -> float:
    model(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return batch.shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='sfsc_resnet50')
    parser.add_argument('--images', type=int, default=256)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own choice)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--output', type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = timm.create_model(args.model).eval()
    widths = net.widths
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = sfsc_timm.save(net, tmp / 'ckpt')
        (tmp / 'images').mkdir()
        make_images(tmp / 'images', args.images)
        runs = {w: [] for w in widths}
        for _ in range(args.repeats):
            for width in widths:  # in turn, so that machine noise hits every width alike
                result = embed_images(checkpoint, tmp / 'images', tmp / f'w{width}.parquet', width=width,
                                      batch_size=args.batch_size, device=args.device, progress=False)
                runs[width].append(result.images_per_second)
        batch = torch.randn(args.batch_size, *net.pretrained_cfg['input_size'], device=args.device)
        rows = []
        for width in widths:
            model = load_embedding_model(checkpoint, width).to(args.device)
            rows.append(dict(width=width, images_per_second=round(statistics.median(runs[width]), 1),
                             runs=[round(r, 1) for r in runs[width]],
                             forward_images_per_second=round(forward_images_per_second(model, batch), 1)))
    load = os.getloadavg()  # other jobs on the machine slow every width alike; say how busy it was
    full = rows[-1]['images_per_second']
    for row in rows:
        row['speedup_vs_full'] = round(row['images_per_second'] / full, 2)
    result = dict(model=args.model, input_size=list(net.pretrained_cfg['input_size']), embed_dim=net.embed_dim,
                  images=args.images, batch_size=args.batch_size, repeats=args.repeats, device=args.device,
                  threads=torch.get_num_threads(), cpus=os.cpu_count(), load_average_1_5_15=[round(v, 2) for v in load],
                  torch=torch.__version__, machine=platform.processor() or platform.machine(), rows=rows)
    print(f'{args.model}, {args.images} JPEG images -> Parquet, batch {args.batch_size}, {args.device}, '
          f'{torch.get_num_threads()} thread(s), median of {args.repeats}; load average {load[0]:.1f} on '
          f'{os.cpu_count()} CPUs:')
    print('| width | images/s (embed, end to end) | images/s (forward only) | vs full width |')
    print('| ---: | ---: | ---: | ---: |')
    for row in rows:
        print(f'| {row["width"]} | {row["images_per_second"]} | {row["forward_images_per_second"]} | '
              f'{row["speedup_vs_full"]}x |')
    write_json_atomically(args.output, result)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
