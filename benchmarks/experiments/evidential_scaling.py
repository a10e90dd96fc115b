"""Why the uncertainty loss as the SFSC paper states it stops learning with hundreds of identities: the loss alone, on
a task that takes seconds.

A classifier (one hidden layer, BatchNorm'd features like the BNNeck's) learns C Gaussian classes in D=128 dimensions
with SGD, once per loss: softmax cross-entropy, and the uncertainty-based compatible loss with softplus (the SFSC
paper's) or exp evidence, with the paper's KL term (weight ramped from 0 to 1 over the run, as over the paper's first
10 epochs) or without it. It reports held-out accuracy, the mean uncertainty u = C / S and the target's expected
probability alpha_y / S, for C = 10 (Fashion-MNIST's classes) and C = 675 (the glyph benchmark's training identities).

    .venv/bin/python benchmarks/experiments/evidential_scaling.py     # about 10 min on one core
    .venv/bin/python benchmarks/experiments/evidential_scaling.py --classes 675 --losses 'exp + KL x 10/C'
        # the KL weight scaled down by 10 / C: 2 min

Both go into one JSON, ``benchmarks/results/experiments/evidential_scaling.json``: an invocation adds its (C, loss)
cells to those already there (at the same number of steps) and records its command.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.losses import UncertaintyCompatibleLoss, dirichlet_uncertainty, evidence_to_alpha

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / 'benchmarks' / 'results' / 'experiments'
LOSSES = {
    'cross-entropy': None,
    'softplus + KL (seed)': dict(evidence='softplus', kl_coef=1.0),
    'softplus, no KL': dict(evidence='softplus', kl_coef=0.0),
    'exp + KL': dict(evidence='exp', kl_coef=1.0),
    'exp, no KL': dict(evidence='exp', kl_coef=0.0),
    'exp + KL x 10/C': dict(evidence='exp', kl_coef='10/C'),  # the KL's weight relative to 10 classes
}


def make_task(num_classes: int, dim: int, per_class: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=gen) * 0.35  # overlapping classes: the task takes some learning
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x = means[labels] + torch.randn(len(labels), dim, generator=gen) * 1.0
    return x, labels


def train(loss_name: str, num_classes: int, steps: int, seed: int = 0) -> Dict[str, float]:
    dim, batch = 128, 64
    x_train, y_train = make_task(num_classes, dim, 40, seed)
    x_test, y_test = make_task(num_classes, dim, 10, seed)  # same class means (same seed), fresh samples
    x_test = x_test + 0 * x_train[:1]  # keep dtype / device identical
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, dim, bias=False), nn.BatchNorm1d(dim),
                        nn.Linear(dim, num_classes))
    nn.init.normal_(net[-1].weight, std=0.001)
    nn.init.zeros_(net[-1].bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    spec = LOSSES[loss_name]
    if spec is None:
        criterion = None
    else:
        kl_coef = 10 / num_classes if spec['kl_coef'] == '10/C' else spec['kl_coef']
        criterion = UncertaintyCompatibleLoss(kl_coef=kl_coef, kl_anneal_epochs=1.0, evidence=spec['evidence'])
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(y_train), (batch,), generator=gen)
        logits = net(x_train[idx])
        if criterion is None:
            loss = F.cross_entropy(logits, y_train[idx])
        else:
            loss = criterion(logits, y_train[idx], epoch=step / steps).loss  # KL weight ramps 0 -> 1 over the run
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        logits = net(x_test)
        alpha = evidence_to_alpha(logits, spec['evidence'] if spec else 'exp')
        return dict(accuracy=float((logits.argmax(1) == y_test).float().mean()),
                    uncertainty=float(dirichlet_uncertainty(alpha).mean()),
                    target_probability=float((alpha.gather(1, y_test[:, None]).squeeze(1) / alpha.sum(1)).mean()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--classes', nargs='+', type=int, default=[10, 675])
    parser.add_argument('--steps', type=int, default=1000)
    parser.add_argument('--losses', nargs='+', default=[name for name in LOSSES if name != 'exp + KL x 10/C'],
                        choices=list(LOSSES), help="default: all but 'exp + KL x 10/C'")
    parser.add_argument('--out', type=Path, default=RESULTS / 'evidential_scaling.json')
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results = {}
    for num_classes in args.classes:
        for name in args.losses:
            r = train(name, num_classes, args.steps)
            results.setdefault(str(num_classes), {})[name] = r
            print(f'C={num_classes:>4}  {name:<22} accuracy {r["accuracy"]:.3f}  u {r["uncertainty"]:.3f}  '
                  f'E[p_target] {r["target_probability"]:.3f}', flush=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if previous.get('steps') != args.steps:  # cells trained for another number of steps are not comparable
        previous = dict(steps=args.steps, results={}, invocations=[])
    for num_classes, cells in results.items():
        previous['results'].setdefault(num_classes, {}).update(cells)
    command = ' '.join(['.venv/bin/python benchmarks/experiments/evidential_scaling.py',
                        *map(shlex.quote, sys.argv[1:])])
    previous['invocations'].append(dict(command=command, seconds=time.time() - start))
    write_json_atomically(args.out, previous)
    print(f'wrote {args.out} ({time.time() - start:.0f} s)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
