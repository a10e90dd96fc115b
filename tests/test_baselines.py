"""The SFSC paper's comparison methods: each trains end to end and gives a full matrix, and each keeps its promise."""
import json

import pytest
import torch
import torch.nn.functional as F

import sfsc_timm
from sfsc_timm.models import ModelSet
from sfsc_timm.train import config_from_dict
from sfsc_timm.train.cli import main
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.trainer import create_model

from test_train import tiny_args, tiny_batch

BASELINES = ['independent', 'bct', 'bct_s', 'asymmetric', 'asymmetric_s', 'sfsc_no_proj', 'sfsc_no_unc']
REGRESSION_BASELINES = ['asymmetric_reg', 'asymmetric_s_reg']  # no recipe of their own: --method on asymmetric's


def _config(method: str, **overrides):
    values = dict(method=method, widths=[0.25, 0.5, 1.0], embed_dim=32, input_size=[3, 16, 16], batch_size=8,
                  opt='momentum', momentum=0.0, weight_decay=0.0, lr=0.1, epochs=1)
    values.update(overrides)
    return config_from_dict(values)


def _step(method: str):
    cfg = _config(method)
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5).train()
    return cfg, net, create_train_step(cfg, net, DistInfo())


@pytest.mark.parametrize('method', BASELINES + REGRESSION_BASELINES)
def test_each_method_trains_two_steps_and_gives_a_full_matrix(tmp_path, method):
    # 32 images in batches of 16: two steps per epoch (per stage for the staged methods)
    args = tiny_args(tmp_path, method, 1, '--method', method, '--max-train', '32')
    assert main(args) == 0
    metrics = json.loads((tmp_path / method / 'export' / 'metrics.json').read_text())
    assert metrics['widths'] == [0.25, 0.5, 1.0]
    assert len(metrics['matrix']) == 3 and all(len(row) == 3 for row in metrics['matrix'])
    assert all(0 < value <= 1 for row in metrics['matrix'] for value in row)
    records = [json.loads(line) for line in (tmp_path / method / 'metrics.jsonl').read_text().splitlines()]
    staged = ('bct', 'asymmetric', 'asymmetric_reg')
    assert len(records) == (2 if method in staged else 1)  # the staged methods train twice as long


def test_independent_models_share_no_parameters():
    cfg, net, step = _step('independent')
    assert isinstance(net, ModelSet)
    storages = [{p.untyped_storage().data_ptr() for p in net.member(w).parameters()} for w in net.widths]
    assert all(not (a & b) for i, a in enumerate(storages) for b in storages[i + 1:])
    # each member's update comes from its own loss alone: its gradient equals that of its own cross-entropy
    images, labels = tiny_batch()
    member = net.member(0.5)
    expected = torch.autograd.grad(F.cross_entropy(member(images), labels), list(member.parameters()))
    before = [p.detach().clone() for p in member.parameters()]
    net.train()
    step(images, labels, epoch=0.0)
    for p, b, g in zip(member.parameters(), before, expected):
        torch.testing.assert_close(p.detach(), b - cfg.lr * g, rtol=0, atol=1e-6)


def _full_model_state(net):
    return {k: v.clone() for k, v in net.member(1.0).state_dict().items()}


def test_bct_trains_against_the_frozen_full_width_classifier():
    cfg, net, step = _step('bct')
    images, labels = tiny_batch()
    step(images, labels, epoch=0.0)  # stage 0: the full-width model alone
    assert all(p.grad is None for w in (0.25, 0.5) for p in net.member(w).parameters())
    frozen = _full_model_state(net)
    student = net.member(0.25)
    with torch.no_grad():
        emb = student.forward_head(student.forward_features(images), pre_logits=True)
        old_head = net.member(1.0).head
        expected_loss = F.cross_entropy(student.head(emb), labels) + F.cross_entropy(old_head(emb), labels)
    result = step(images, labels, epoch=1.0)  # stage 1: the narrower models
    assert result.width_losses[2] == pytest.approx(float(expected_loss), abs=1e-5)  # widths widest first
    after = net.member(1.0).state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # classifier and backbone untouched


@pytest.mark.parametrize('method', ['asymmetric', 'asymmetric_reg'])
def test_asymmetric_leaves_the_gallery_model_unchanged(method):
    cfg, net, step = _step(method)
    images, labels = tiny_batch()
    step(images, labels, epoch=0.0)
    frozen = _full_model_state(net)
    student_before = [p.detach().clone() for p in net.member(0.5).parameters()]
    step(images, labels, epoch=1.0)
    after = net.member(1.0).state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # weights and BatchNorm statistics
    assert any(not torch.equal(p, b) for p, b in zip(net.member(0.5).parameters(), student_before))


def test_asymmetric_shared_regression_regresses_narrow_widths_to_the_full_embedding():
    cfg, net, step = _step('asymmetric_s_reg')
    images, labels = tiny_batch()
    net.eval()  # fixed BatchNorm statistics, so the hand computation sees the same network
    with torch.no_grad():
        full = net.forward_head(net.forward_features(images), pre_logits=True)
        with net.width(0.5):
            half = net.forward_head(net.forward_features(images), pre_logits=True)
    expected = float((1 - F.cosine_similarity(half, full)).mean())
    result = step(images, labels, epoch=0.0)
    assert result.width_losses[1] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize('method', BASELINES)
def test_the_market_recipe_trains_each_baseline_with_the_same_data_model_and_schedule(method):
    # one Market-1501 recipe per recommended setting; a baseline is that recipe with --method (README, "Training")
    from pathlib import Path

    from sfsc_timm.train.config import parse_args
    recipe = Path(__file__).resolve().parents[1] / 'recipes' / 'market1501_resnet50_sfsc.yaml'
    sfsc = config_from_dict(parse_args(['-c', str(recipe)])[0]).to_dict()
    other = config_from_dict(parse_args(['-c', str(recipe), '--method', method])[0]).to_dict()
    assert {k for k in sfsc if k not in ('sfsc', method) and sfsc[k] != other[k]} == {'method'}
    assert other['method'] == method


def test_a_model_set_export_loads_and_evaluates(tmp_path, capsys):
    from sfsc_timm.eval.cli import main as eval_main
    torch.manual_seed(0)
    models = ModelSet.create('sfsc_resnet18', (0.5, 1.0), num_classes=10, embed_dim=32,
                             pretrained_cfg_overlay=dict(input_size=(3, 16, 16)))
    models.save(tmp_path / 'independent')
    assert sorted(p.name for p in (tmp_path / 'independent').iterdir()) == ['width_0_5', 'width_1']
    loaded = sfsc_timm.load(tmp_path / 'independent')
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), models.state_dict().values()))
    assert eval_main([str(tmp_path / 'independent'), '--max-query', '10', '--max-gallery', '40',
                      '--output', str(tmp_path / 'eval')]) == 0
    assert json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['widths'] == [0.5, 1.0]
