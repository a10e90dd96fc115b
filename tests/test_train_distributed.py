""" Two gloo processes on half batches take the same trainer step as one process on the whole batch. """
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import create_train_step

from test_train import tiny_batch, tiny_config, tiny_net
from net_utils import free_port


def _one_step(method: str, images, labels, dist_info: DistInfo):
    # sfsc: a large lr so that the widths' gradients come to conflict within a few steps
    cfg = tiny_config(method=method, opt='sgd', momentum=0.9, weight_decay=1e-4, lr=0.5 if method == 'sfsc' else 0.1)
    net = tiny_net(cfg)
    # BatchNorm in train mode normalises with per-rank batch statistics (no SyncBatchNorm on CPU), which no
    # all-reduce can make equal to whole-batch ones; with running statistics every sample is processed alike, so
    # what is compared is exactly the gradient / priority / projection path
    net.eval()
    step = create_train_step(cfg, net, dist_info)
    results = [step(images, labels, epoch=0.5) for _ in range(4)]
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, [r.num_conflicts for r in results]


def _worker(rank: int, world_size: int, port: int, method: str, out_dir: str):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size, timeout=timedelta(seconds=120))
    try:
        images, labels = tiny_batch(8)
        half = slice(rank * 4, rank * 4 + 4)
        state, conflicts = _one_step(method, images[half], labels[half], DistInfo(rank, rank, world_size))
        torch.save({'state': state, 'conflicts': conflicts}, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()



@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
@pytest.mark.parametrize('method', ['sfsc', 'bct_s'])
def test_two_ranks_on_half_batches_match_one_process(tmp_path, method):
    mp.spawn(_worker, args=(2, free_port(), method, str(tmp_path)), nprocs=2, join=True)
    images, labels = tiny_batch(8)
    expected, conflicts = _one_step(method, images, labels, DistInfo())
    if method == 'sfsc':
        assert sum(conflicts) > 0  # the nonlinear projection was exercised
    for rank in range(2):
        result = torch.load(tmp_path / f'rank{rank}.pt', weights_only=True)
        assert result['conflicts'] == conflicts
        for key, value in expected.items():
            torch.testing.assert_close(result['state'][key], value, rtol=1e-5, atol=1e-6, msg=key)
