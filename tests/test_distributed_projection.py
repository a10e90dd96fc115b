""" Two gloo ranks on half batches must take the same step as one process on the whole batch. """
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from sfsc_timm.optim import GradientProjection
from net_utils import free_port

NUM_TASKS = 3
STEPS = 3


class MultiTaskNet(nn.Module):
    """A shared linear trunk; each task has a private output scale (stand-in for a width's private BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 3)
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(3)) for _ in range(NUM_TASKS)])

    def losses(self, x, targets):
        # one forward per task, as one per width in SFSC, so each backward frees its own graph;
        # per-task means over the batch: the mean over ranks of half-batch means is the full-batch mean
        return [((self.trunk(x) * s - t) ** 2).mean() for s, t in zip(self.scales, targets)]


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=gen)
    # opposite targets make the tasks' trunk gradients conflict
    base = torch.randn(8, 3, generator=gen)
    targets = [base, -base + 0.1 * torch.randn(8, 3, generator=gen), 0.5 * torch.randn(8, 3, generator=gen)]
    return x, targets


def _train(x, targets, generator_seed):
    torch.manual_seed(0)
    net = MultiTaskNet()
    inner = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt = GradientProjection(inner, net.trunk.parameters(), NUM_TASKS, torch.Generator().manual_seed(generator_seed))
    for _ in range(STEPS):
        opt.zero_grad()
        for i, loss in enumerate(net.losses(x, targets)):
            loss.backward()
            opt.collect(i)
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, opt.num_conflicts_total


def _worker(rank, world_size, port, out_dir):
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    dist.init_process_group('gloo', rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        x, targets = _data()
        half = slice(rank * 4, rank * 4 + 4)
        # ranks are seeded differently on purpose: the wrapper must broadcast rank 0's generator state
        state, conflicts = _train(x[half], [t[half] for t in targets], generator_seed=100 + rank)
        torch.save({'state': state, 'conflicts': conflicts}, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()



@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
def test_two_ranks_on_half_batches_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    x, targets = _data()
    expected, conflicts = _train(x, targets, generator_seed=100)
    assert conflicts > 0  # the projection (nonlinear) was exercised
    for rank in range(2):
        result = torch.load(tmp_path / f'rank{rank}.pt')
        assert result['conflicts'] == conflicts
        for name, value in expected.items():
            torch.testing.assert_close(result['state'][name], value, rtol=1e-5, atol=1e-6, msg=name)
