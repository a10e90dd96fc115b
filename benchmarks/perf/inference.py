"""Inference cost of each width of sfsc_resnet50, measured side by side in one run.

For every width: the static sub-model against a natively built timm ResNet-50 of the same channels (the physical
limit: target ratio <= 1.03), the supernet switched to that width against the static sub-model, and latency,
parameters and GMACs relative to the full width. Then the peak memory of loading width 0.25 from the full checkpoint
against loading width 1.0 (target <= 0.35), each in a fresh process.

    .venv/bin/python benchmarks/perf/inference.py            # batch 32 at 256x128, as in the README
    .venv/bin/python benchmarks/perf/inference.py --quick    # batch 4, fewer repeats
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch
from timm.models._prune import adapt_model_from_string

import sfsc_timm
from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.models.profile import count_gmacs, count_parameters, interleaved_latency

RESULTS = Path(__file__).resolve().parents[1] / 'results' / 'perf'

_MEMORY_PROBE = r'''
import sys, timm, torch, sfsc_timm
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
torch.zeros(1)  # finish lazy initialisation before the baseline
before = status('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current size
model = timm.create_model('local-dir:' + sys.argv[1], width=float(sys.argv[2]), pretrained=True)
print(status('VmHWM:') - before)
'''


def native_resnet50(static: torch.nn.Module, embed_dim: int) -> torch.nn.Module:
    """timm's own ResNet-50 rebuilt with the sub-model's channels by timm's pruned-model adapter
    (``adapt_model_from_string``; ``channels=`` alone cannot narrow the 64-channel stem), plus a linear layer to D
    standing in for the sub-model's neck."""
    shapes = {k: list(v.shape) for k, v in static.backbone.state_dict().items() if k.endswith('.weight')}
    shapes['fc.weight'] = [embed_dim, static.backbone.num_features]
    spec = '***'.join(f'{k}:[{",".join(map(str, v))}]' for k, v in shapes.items())
    return adapt_model_from_string(timm.create_model('resnet50', num_classes=embed_dim), spec)


def load_peak_bytes(folder: Path, width: float) -> int:
    out = subprocess.run([sys.executable, '-c', _MEMORY_PROBE, str(folder), str(width)], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--img-size', type=int, nargs=2, default=(256, 128))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--quick', action='store_true', help='batch 4, 3 repeats')
    parser.add_argument('--out', type=Path, default=RESULTS / 'inference.json')
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.repeats = 4, 3
    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet50', num_classes=0).eval()
    x = torch.randn(args.batch_size, 3, *args.img_size)
    rows = {}
    for width in net.widths:
        static = sfsc_timm.extract(net, width)
        native = native_resnet50(static, net.embed_dim)
        assert count_parameters(native) - count_parameters(native.fc) == count_parameters(static.backbone)
        supernet = net.set_width(width)
        latency = interleaved_latency(dict(static=static, native=native, supernet=supernet), x, args.repeats)
        rows[width] = dict(
            latency=latency,
            static_over_native=latency['static']['median_s'] / latency['native']['median_s'],
            supernet_over_static=latency['supernet']['median_s'] / latency['static']['median_s'],
            params=count_parameters(static),
            backbone_params=count_parameters(static.backbone),
            gmacs=count_gmacs(static, (1, 3, *args.img_size)),
        )
    net.set_width(1.0)
    full = rows[1.0]
    for row in rows.values():
        row['latency_over_full'] = row['latency']['static']['median_s'] / full['latency']['static']['median_s']
        row['params_over_full'] = row['params'] / full['params']
        row['gmacs_over_full'] = row['gmacs'] / full['gmacs']

    with tempfile.TemporaryDirectory() as tmp:
        sfsc_timm.save(net, Path(tmp) / 'ckpt')
        checkpoint_bytes = os.path.getsize(Path(tmp) / 'ckpt' / 'model.safetensors')
        peak = {w: load_peak_bytes(Path(tmp) / 'ckpt', w) for w in (0.25, 1.0)}
    memory = dict(checkpoint_bytes=checkpoint_bytes, peak_load_bytes_w0_25=peak[0.25], peak_load_bytes_w1=peak[1.0],
                  ratio=peak[0.25] / peak[1.0])

    print(f'sfsc_resnet50, batch {args.batch_size} at {args.img_size[0]}x{args.img_size[1]}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats}')
    print(f'{"width":>5} {"static s":>9} {"native s":>9} {"static/native":>13} {"supernet/static":>15} '
          f'{"lat/full":>8} {"params (M)":>10} {"params/full":>11} {"GMACs":>6} {"GMACs/full":>10}')
    for width, row in rows.items():
        lat = row['latency']
        print(f'{width:>5} {lat["static"]["median_s"]:>9.3f} {lat["native"]["median_s"]:>9.3f} '
              f'{row["static_over_native"]:>13.3f} {row["supernet_over_static"]:>15.3f} '
              f'{row["latency_over_full"]:>8.3f} '
              f'{row["params"] / 1e6:>10.2f} {row["params_over_full"]:>11.3f} {row["gmacs"]:>6.2f} '
              f'{row["gmacs_over_full"]:>10.3f}')
    print(f'peak memory loading width 0.25 / width 1.0 from one {checkpoint_bytes / 2**20:.0f} MiB checkpoint: '
          f'{peak[0.25] / 2**20:.1f} MiB / {peak[1.0] / 2**20:.1f} MiB = {memory["ratio"]:.3f} (target <= 0.35)')
    worst = max(row['static_over_native'] for row in rows.values())
    print(f'worst static/native latency ratio: {worst:.3f} (target <= 1.03)')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(config=dict(batch_size=args.batch_size, img_size=list(args.img_size), repeats=args.repeats,
                              threads=torch.get_num_threads(), torch=torch.__version__, timm=timm.__version__),
                  widths={str(w): r for w, r in rows.items()}, load_memory=memory)
    write_json_atomically(args.out, result)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
