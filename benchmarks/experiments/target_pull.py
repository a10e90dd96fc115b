"""How hard each loss pulls the target logit up, for an example the network gets wrong: the measurement behind
``sfsc_ce`` (docs/open_set.md).

One example, C classes, every non-target logit 0, the target logit z_y on a grid; the pull is ``-dL/dz_y``, by
autograd. Cross-entropy pulls with ``1 - p_y`` (about 1 while the example is hard); the expected cross-entropy under
``Dir(evidence(z) + 1)`` (the uncertainty loss without its KL term) pulls with about ``evidence'(z_y) psi'(alpha_y)``,
which vanishes as ``z_y`` falls for exp evidence: the flat prior's ``+ 1`` outweighs the target's own evidence, so
hard examples stop being learnt.

    .venv/bin/python benchmarks/experiments/target_pull.py        # seconds: results/experiments/target_pull.json
"""
import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from sfsc_timm.atomic_io import write_json_atomically
from sfsc_timm.losses import dirichlet_expected_ce, evidence_to_alpha

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / 'benchmarks' / 'results' / 'experiments'
LOSSES = {
    'cross-entropy (sfsc_ce, bct_s)': lambda z, y: F.cross_entropy(z, y),
    'expected CE, exp evidence + 1 (sfsc_exp)':
        lambda z, y: dirichlet_expected_ce(evidence_to_alpha(z, 'exp'), y).mean(),
    'expected CE, softplus evidence + 1 (sfsc without KL)':
        lambda z, y: dirichlet_expected_ce(evidence_to_alpha(z, 'softplus'), y).mean(),
}


def target_pull(loss_name: str, num_classes: int, target_logit: float) -> float:
    """``-dL/dz_y`` for one example whose non-target logits are 0."""
    z = torch.zeros(1, num_classes, dtype=torch.float64)
    z[0, 0] = target_logit
    z.requires_grad_(True)
    LOSSES[loss_name](z, torch.tensor([0])).backward()
    return -float(z.grad[0, 0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--classes', nargs='+', type=int, default=[10, 675])
    parser.add_argument('--target-logits', nargs='+', type=float, default=[-6, -4, -2, 0, 2, 4, 6])
    parser.add_argument('--out', type=Path, default=RESULTS / 'target_pull.json')
    args = parser.parse_args()
    results = {}
    for num_classes in args.classes:
        print(f'C = {num_classes}: pull -dL/dz_y at z_y = ' + ' '.join(f'{z:>6g}' for z in args.target_logits))
        for name in LOSSES:
            pulls = [target_pull(name, num_classes, z) for z in args.target_logits]
            results.setdefault(str(num_classes), {})[name] = pulls
            print(f'  {name:<54}' + ' '.join(f'{p:6.3f}' for p in pulls))
    write_json_atomically(args.out, dict(target_logits=args.target_logits, non_target_logits=0.0, results=results))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
