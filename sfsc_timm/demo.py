"""``sfsc-timm demo``: build a supernet, extract every width, and print what each width costs on this CPU."""
from typing import List, Optional

import timm
import torch

import sfsc_timm
from sfsc_timm.errors import CommandParser, UsageError, run_command
from sfsc_timm.models.profile import count_gmacs, count_parameters, interleaved_latency


def demo(argv: List[str]) -> None:
    parser = CommandParser(prog='sfsc-timm demo', description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='sfsc_resnet50')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args(argv)
    if not args.model.startswith('sfsc_') or not timm.is_model(args.model):
        raise UsageError(f'--model {args.model!r} is not an sfsc model; available: '
                         f'{", ".join(timm.list_models("sfsc_*"))}.')
    if args.batch_size < 1 or args.repeats < 1:
        raise UsageError('--batch-size and --repeats must be >= 1.')
    net = timm.create_model(args.model).eval()
    size = net.pretrained_cfg['input_size']
    x = torch.randn(args.batch_size, *size)
    subs = {w: sfsc_timm.extract(net, w) for w in net.widths}
    latency = interleaved_latency({str(w): m for w, m in subs.items()}, x, repeats=args.repeats)
    with torch.inference_mode():
        reference = {w: subs[w](x) for w in subs}
    print(f'{args.model}: one supernet, {len(net.widths)} widths, embedding D={net.embed_dim}, '
          f'input {size[1]}x{size[2]}, batch {args.batch_size}, {torch.get_num_threads()} CPU threads')
    print(f'{"width":>6} {"params (M)":>11} {"share":>6} {"GMACs":>7} {"latency (ms)":>13} '
          f'{"max |static - supernet|":>24}')
    full = count_parameters(subs[1.0])
    for w, sub in subs.items():
        with torch.inference_mode(), net.width(w):
            diff = (net(x) - reference[w]).abs().max().item()
        print(f'{w:>6} {count_parameters(sub) / 1e6:>11.2f} {count_parameters(sub) / full:>6.3f} '
              f'{count_gmacs(sub, (1, *size)):>7.2f} {latency[str(w)]["median_s"] * 1e3:>13.1f} {diff:>24.2e}')


def main(argv: Optional[List[str]] = None) -> int:
    return run_command('sfsc-timm demo', demo, argv)


if __name__ == '__main__':
    raise SystemExit(main())
