""" The trainer: recipes and overrides, the run folder, resume, non-finite losses and the SFSC step's wiring. """
import json
import shutil
import multiprocessing
import os
import re
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

import sfsc_timm
from sfsc_timm.optim import project_conflicting
from sfsc_timm.train import (
    ConfigError, TrainConfig, config_from_dict, load_recipe, private_params_by_width, shared_params,
)
from sfsc_timm.train.params import width_gradient_supports
from sfsc_timm.train.checkpointing import load_training_state
from sfsc_timm.train.cli import main, resolve_run
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.steps import SFSCStep

REPO = Path(__file__).resolve().parents[1]
# every method registered when the keys widest_loss and gradient_merge were added
METHODS_BEFORE_THE_REFERENCE = ('sfsc', 'sfsc_exp', 'sfsc_ipd', 'sfsc_ce', 'sfsc_ce_ens', 'sfsc_no_proj', 'sfsc_no_unc',
                                'bct_s', 'independent', 'bct', 'asymmetric', 'asymmetric_reg', 'asymmetric_s',
                                'asymmetric_s_reg')
DEFAULT_RECIPE = REPO / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'
MARKET_RECIPE = REPO / 'recipes' / 'market1501_resnet50_sfsc.yaml'

# a few steps on a tiny Fashion-MNIST subset at 16x16 with two small widths: seconds per run
TINY = [
    '--widths', '0.25', '0.5', '1.0', '--embed-dim', '32', '--input-size', '3', '16', '16', '--max-train', '96',
    '--batch-size', '16', '--val-max-query', '20', '--val-max-gallery', '40', '--eval-max-query', '20',
    '--eval-max-gallery', '50', '--warmup-epochs', '0', '--lr', '0.05', '--no-progress',
]
SFSC_TINY = ['--kl-anneal-epochs', '2']  # an option of the sfsc methods: the others refuse it


def tiny_args(tmp_path: Path, name: str, epochs: int = 2, *extra: str):
    method = extra[extra.index('--method') + 1] if '--method' in extra else 'sfsc'
    options = SFSC_TINY if method in ('sfsc', 'sfsc_ce_ens') else []
    return ['-c', str(DEFAULT_RECIPE), *TINY, *options, '--epochs', str(epochs), '--output', str(tmp_path / name),
            *extra]


def tiny_config(**overrides) -> TrainConfig:
    values = dict(widths=[0.25, 0.5, 1.0], embed_dim=32, input_size=[3, 16, 16], batch_size=8, opt='momentum',
                  momentum=0.0, weight_decay=0.0, lr=0.1)
    values.update(overrides)
    return config_from_dict(values)


def tiny_net(cfg: TrainConfig, num_classes: int = 5):
    torch.manual_seed(0)
    return timm.create_model('sfsc_resnet18', num_classes=num_classes, widths=tuple(cfg.widths),
                             embed_dim=cfg.embed_dim, pretrained_cfg_overlay=dict(input_size=tuple(cfg.input_size)))


def tiny_batch(n: int = 8, num_classes: int = 5):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 16, 16, generator=gen), torch.arange(n) % num_classes


# --- recipes and configuration ---

@pytest.mark.parametrize('recipe', sorted((REPO / 'recipes').glob('*.yaml')), ids=lambda path: path.stem)
def test_every_recipe_lists_only_what_it_changes_from_the_defaults(recipe):
    values = yaml.safe_load(recipe.read_text())
    defaults = TrainConfig().to_dict()
    method = values.get('method', defaults['method'])
    own = values.pop(method, {})
    unchanged = [key for key, value in values.items() if key != 'method' and value == defaults[key]]
    options = config_from_dict(dict(method=method)).to_dict()[method]
    unchanged += [f'{method}.{key}' for key, value in own.items() if value == options[key]]
    assert not unchanged, f'{recipe.name} repeats defaults: {unchanged}'
    config_from_dict(load_recipe(recipe), where=str(recipe))  # and it is valid


def test_the_default_recipe_is_sfsc_with_the_first_readings_options_and_the_defaults():
    cfg = config_from_dict(load_recipe(DEFAULT_RECIPE))
    assert cfg.to_dict() == {**TrainConfig().to_dict(), 'method': 'sfsc', 'sfsc': cfg.to_dict()['sfsc']}
    assert (cfg.options.widest_loss, cfg.options.kl_coef, cfg.options.kl_anneal_epochs, cfg.options.priority,
            cfg.options.gradient_merge) == ('uncertainty', 1.0, 10.0, 'uncertainty', 'sum')


def test_market_recipe_is_valid():
    cfg = config_from_dict(yaml.safe_load(MARKET_RECIPE.read_text()))
    assert cfg.model == 'sfsc_resnet50' and cfg.input_size == [3, 256, 128]
    assert cfg.sampler == 'pk' and cfg.batch_size == cfg.pk_p * cfg.pk_k == 64 and cfg.lambda_tri > 0


def test_command_line_overrides_the_recipe(tmp_path):
    cfg, state, _, _ = resolve_run(['-c', str(DEFAULT_RECIPE), '--lr', '0.02', '--widths', '0.5', '1',
                                    '--batch_size', '32', '--no-amp', '--max-train', 'none'])
    assert (cfg.lr, cfg.widths, cfg.batch_size, cfg.max_train, state) == (0.02, [0.5, 1.0], 32, None, None)
    assert cfg.experiment == DEFAULT_RECIPE.stem and cfg.run_dir == Path('output') / DEFAULT_RECIPE.stem
    assert cfg.epochs == TrainConfig().epochs  # untouched keys keep the recipe's value


def test_unknown_recipe_key_lists_the_valid_ones(tmp_path):
    recipe = tmp_path / 'typo.yaml'
    recipe.write_text('model: sfsc_resnet18\nlearning_rate: 0.1\n')
    with pytest.raises(ConfigError, match='learning_rate') as err:
        resolve_run(['-c', str(recipe)])
    assert 'Valid keys:' in str(err.value) and 'lr' in str(err.value) and 'widths' in str(err.value)
    assert main(['-c', str(recipe)]) == 2


@pytest.mark.parametrize('widths, message', [
    ([0.25, 1.5], 'in \\(0, 1\\]'), ([0.25, 0.5], 'full width 1.0'), ([0.5, 0.5, 1.0], 'repeats'), ([], 'at least one'),
])
def test_invalid_widths_are_rejected(widths, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(dict(widths=widths))


@pytest.mark.parametrize('values, message', [
    (dict(method='sfsc_typo'), 'available: sfsc, sfsc_ce_ens, bct_s, asymmetric_s, independent, bct, asymmetric'),
    (dict(sampler='pk', batch_size=10), 'pk_p \\* pk_k'),
    (dict(lr='fast'), "'lr' must be float"), (dict(lambda_tri=1.0), 'sampler: pk'), (dict(model=3), 'must be str'),
])
def test_invalid_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_unknown_model_is_a_config_error():
    from sfsc_timm.train.trainer import create_model
    with pytest.raises(ConfigError, match='unknown model'):
        create_model(config_from_dict(dict(model='resnet18')), 10)


# --- parameter wiring and the SFSC step ---

def test_shared_and_private_parameters_partition_the_network():
    cfg = tiny_config()
    net = tiny_net(cfg)
    private = private_params_by_width(net)
    assert sorted(private) == [0.25, 0.5, 1.0]
    names = {id(p): n for n, p in net.named_parameters()}
    assert all('.per_width.0_25.' in names[id(p)] for p in private[0.25])
    assert all('.per_width.' not in names[id(p)] and names[id(p)].endswith(('.weight', '.bias')) for p in private[1.0])
    shared = shared_params(net)
    assert 'head.weight' in {names[id(p)] for p in shared} and 'neck.fc.weight' in {names[id(p)] for p in shared}
    all_ids = [id(p) for p in shared] + [id(p) for ps in private.values() for p in ps]
    assert sorted(all_ids) == sorted(id(p) for p in net.parameters())  # a partition: no overlap, nothing missing


def test_width_gradient_supports_hold_for_the_supernet():
    # GradientProjection reads only these blocks: a backward pass at width w must leave the rest of every shared
    # gradient exactly zero
    cfg = tiny_config()
    net = tiny_net(cfg).train()
    widths = (1.0, 0.5, 0.25)
    supports = width_gradient_supports(net, widths)
    images, labels = tiny_batch()
    sliced = 0
    for task, width in enumerate(widths):
        net.zero_grad(set_to_none=True)
        with net.width(width):
            torch.nn.functional.cross_entropy(net(images), labels).backward()
        for p in shared_params(net):
            index = supports[p][task]
            outside = p.grad.clone()
            outside[index] = 0
            assert not outside.any()
            sliced += index != ()
    assert sliced > 0


def _evidential_loss_by_hand(logits, labels, kl_weight):
    """The SFSC paper's uncertainty loss written out: alpha = softplus(z) + 1, the expected cross-entropy
    psi(S) - psi(alpha_y), plus kl_weight x KL(Dir(alpha~) || Dir(1)) with the target's evidence removed."""
    alpha = torch.nn.functional.softplus(logits) + 1
    num_classes = alpha.shape[1]
    expected_ce = torch.digamma(alpha.sum(1)) - torch.digamma(alpha[torch.arange(len(labels)), labels])
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(alpha)
    tilde = one_hot + (1 - one_hot) * alpha
    s = tilde.sum(1)
    kl = (torch.lgamma(s) - torch.lgamma(torch.tensor(float(num_classes))) - torch.lgamma(tilde).sum(1)
          + ((tilde - 1) * (torch.digamma(tilde) - torch.digamma(s)[:, None])).sum(1))
    return expected_ce.mean() + kl_weight * kl.mean(), (num_classes / alpha.sum(1)).mean()


def _hand_computed_update(cfg, net, images, labels, epoch, reference: bool):
    """Per width (widest first) the gradients of pi_w * loss_w, PCGrad on the shared ones, one plain SGD step.

    ``reference``: `sfsc` as the public reference implements it (the widest width on cross-entropy, a constant KL weight
    0.0005, no priorities, the projected shared gradients merged by their mean); else the first reading (every width
    on the uncertainty loss with the annealed KL weight, priorities m u_w / sum u, the projected gradients summed).
    """
    widths = sorted(cfg.widths, reverse=True)
    kl_weight = 0.0005 if reference else min(1.0, epoch / 10.0)
    params = list(net.parameters())
    shared_ids = {id(p) for p in shared_params(net)}
    losses, uncertainties = [], []
    for w in widths:
        with net.width(w):
            logits = net(images)
        loss, uncertainty = _evidential_loss_by_hand(logits, labels, kl_weight)
        if reference and w == widths[0]:
            loss = torch.nn.functional.cross_entropy(logits, labels)
        losses.append(loss)
        uncertainties.append(uncertainty.detach())
    u = torch.stack(uncertainties)
    priorities = torch.ones(len(widths)) if reference else len(widths) * u / u.sum()
    grads = [torch.autograd.grad(pi * loss, params, allow_unused=True) for pi, loss in zip(priorities, losses)]
    grads = [[torch.zeros_like(p) if g is None else g for g, p in zip(row, params)] for row in grads]
    shared_index = [i for i, p in enumerate(params) if id(p) in shared_ids]
    flat = torch.stack([torch.cat([row[i].reshape(-1) for i in shared_index]) for row in grads])
    update = project_conflicting(flat, generator=torch.Generator().manual_seed(cfg.seed))
    if reference:
        update = update / len(widths)  # the mean of the projected gradients
    expected, offset = {}, 0
    for i, p in enumerate(params):
        if id(p) in shared_ids:
            g = update[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        else:  # private: only its own width's backward reaches it, whatever the merge
            g = sum(row[i] for row in grads)
        expected[id(p)] = p.detach() - cfg.lr * g
    conflicts = int((flat @ flat.t() < 0).sum()) // 2
    return expected, conflicts, priorities


@pytest.mark.parametrize('method', ['sfsc', 'sfsc_first_reading'])
def test_sfsc_step_equals_hand_computed_projection(method):
    cfg = tiny_config(method=method)
    net = tiny_net(cfg).train()
    images, labels = tiny_batch()
    reference = tiny_net(cfg).train()
    expected, conflicting_pairs, priorities = _hand_computed_update(cfg, reference, images, labels, epoch=0.5,
                                                                    reference=method == 'sfsc')
    step = create_train_step(cfg, net, DistInfo())
    result = step(images, labels, epoch=0.5)
    assert not result.skipped and len(result.priorities) == 3 and abs(sum(result.priorities) - 3) < 1e-5
    torch.testing.assert_close(torch.tensor(result.priorities), priorities.float())
    assert conflicting_pairs > 0 and result.num_conflicts > 0  # the projection was exercised
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[id(dict(reference.named_parameters())[name])], rtol=0,
                                   atol=2e-6, msg=name)


def test_sfsc_trains_the_widest_width_on_cross_entropy_and_the_others_on_the_constant_kl_uncertainty_loss():
    cfg = tiny_config(method='sfsc')
    options = cfg.options
    assert (options.widest_loss, options.kl_coef, options.kl_anneal_epochs, options.priority,
            options.gradient_merge) == ('cross_entropy', 0.0005, 0.0, 'uniform', 'mean')
    net = tiny_net(cfg).train()
    images, labels = tiny_batch()
    step = create_train_step(cfg, net, DistInfo())
    for epoch in (0.0, 3.0, 50.0):  # the KL weight is the constant at every epoch
        losses, _ = step.width_losses(images, labels, epoch)
        for width, loss in zip(step.widths, losses):
            with torch.no_grad(), net.width(width):
                logits = net(images)
            if width == 1.0:
                expected = torch.nn.functional.cross_entropy(logits, labels)
            else:
                expected = _evidential_loss_by_hand(logits, labels, 0.0005)[0]
            torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6, msg=f'{width} at {epoch}')


@pytest.mark.parametrize('merge', ['mean', 'sum'])
def test_gradient_merge_divides_only_the_shared_gradients(merge):
    """With the projection off (sfsc_no_proj), the update of a shared parameter is the sum of the widths' gradients,
    or a third of it (three widths) with the mean merge; a width's private BatchNorm takes its own gradient."""
    cfg = tiny_config(method='sfsc_no_proj', gradient_merge=merge)
    net, reference = tiny_net(cfg).train(), tiny_net(cfg).train()
    images, labels = tiny_batch()
    step = create_train_step(cfg, net, DistInfo())
    losses, _ = SFSCStep.width_losses(create_train_step(cfg, reference, DistInfo()), images, labels, 0.0)
    params = dict(reference.named_parameters())
    grads = [dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True))) for loss in losses]
    step(images, labels, epoch=0.0)
    shared = {id(p) for p in shared_params(reference)}
    scale = 1 / 3 if merge == 'mean' else 1.0
    for name, p in net.named_parameters():
        total = sum(g[name] for g in grads if g[name] is not None)
        factor = scale if id(params[name]) in shared else 1.0
        torch.testing.assert_close(p.detach(), params[name].detach() - cfg.lr * factor * total, rtol=0, atol=2e-6,
                                   msg=name)


def test_private_norm_of_a_width_only_changes_when_that_width_is_trained():
    cfg = tiny_config(widths=[0.25, 0.5, 1.0])
    net = tiny_net(cfg).train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    step = create_train_step(cfg, net, DistInfo())
    step.widths = (1.0, 0.5)  # train two of the three widths: 0.25's private BatchNorm must not move
    step.optimizer = create_train_step(config_from_dict({**cfg.to_dict(), 'widths': [0.5, 1.0]}),
                                       net, DistInfo()).optimizer
    step(*tiny_batch(), epoch=0.0)
    changed = {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert not any('.per_width.0_25.' in n for n in changed)
    assert any('.per_width.0_5.' in n for n in changed) and 'backbone.bn1.weight' in changed


def test_nonfinite_step_is_skipped_without_changing_anything(monkeypatch):
    cfg = tiny_config()
    net = tiny_net(cfg).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    step = create_train_step(cfg, net, DistInfo())
    original = SFSCStep.forward_width

    def nan_at_half_width(self, width, images):
        out = original(self, width, images)
        return out._replace(logits=out.logits * float('nan')) if width == 0.5 else out

    monkeypatch.setattr(SFSCStep, 'forward_width', nan_at_half_width)
    result = step(*tiny_batch(), epoch=0.0)
    assert result.skipped and not any(p.grad is not None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # weights and BatchNorm running statistics alike


# --- whole runs ---

def test_run_folder_has_everything(tmp_path):
    assert main(tiny_args(tmp_path, 'run')) == 0
    run = tmp_path / 'run'
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    assert cfg['epochs'] == 2 and cfg['input_size'] == [3, 16, 16] and cfg['output'] == str(run)
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2]
    assert all(len(r['val_matrix']) == 3 and r['skipped_steps'] == 0 for r in records)
    for name in ('last', 'best'):
        folder = run / 'checkpoints' / name
        assert {p.name for p in folder.iterdir()} == {'model.safetensors', 'config.json', 'training_state.pt'}
    state = load_training_state(run / 'checkpoints' / 'last')
    assert state['epoch'] == 2 and 'gradient_projection' in state['step']['optimizer'] and len(state['rng']) == 1
    export = run / 'export'
    assert {p.name for p in export.iterdir()} == {'model.safetensors', 'config.json', 'metrics.json',
                                                  'compatibility.png'}
    metrics = json.loads((export / 'metrics.json').read_text())
    assert metrics['widths'] == [0.25, 0.5, 1.0] and len(metrics['matrix']) == 3
    assert set(metrics['metrics']) == {f'{q:g}->{g:g}' for q in (0.25, 0.5, 1) for g in (0.25, 0.5, 1)}
    assert metrics['summary']['mean'] == pytest.approx(sum(map(sum, metrics['matrix'])) / 9)
    # the built-in default recipe's: sfsc with the first reading's options
    assert metrics['recipe']['method'] == 'sfsc' and metrics['recipe']['sfsc']['priority'] == 'uncertainty'
    net = sfsc_timm.load(export)  # the export is an ordinary sfsc_timm checkpoint
    assert net.widths == (0.25, 0.5, 1.0) and net.embed_dim == 32
    # no staging left behind; the run lock's file stays by design (sfsc_timm/train/run_lock.py)
    assert [p.name for p in run.glob('.*')] == ['.lock'] and not list((run / 'checkpoints').glob('.*'))


def _weights(folder: Path):
    return load_file(str(folder / 'model.safetensors'))


@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    assert main(tiny_args(tmp_path, 'whole', 3)) == 0
    assert main(tiny_args(tmp_path, 'parts', 3, '--stop-after', '1')) == 0  # "killed" after epoch 1
    assert not (tmp_path / 'parts' / 'export').exists()
    assert load_training_state(tmp_path / 'parts' / 'checkpoints' / 'last')['epoch'] == 1
    assert main(['--resume', str(tmp_path / 'parts'), '--stop-after', '1']) == 0  # resumed without the recipe
    resumed = ['-c', str(DEFAULT_RECIPE), *TINY, *SFSC_TINY, '--epochs', '3', '--resume', str(tmp_path / 'parts')]
    assert main(resumed) == 0
    whole, parts = _weights(tmp_path / 'whole' / 'export'), _weights(tmp_path / 'parts' / 'export')
    assert whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    epochs = [json.loads(line)['epoch'] for line in (tmp_path / 'parts' / 'metrics.jsonl').read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_resume_with_another_recipe_names_the_differing_keys(tmp_path):
    assert main(tiny_args(tmp_path, 'run', 2, '--stop-after', '1')) == 0
    with pytest.raises(ConfigError, match=r"differing keys: lr: checkpoint 0\.05 vs now 0\.2; method: checkpoint "
                                          r"'sfsc' vs now 'bct_s'\. "):
        resolve_run(['-c', str(DEFAULT_RECIPE), *TINY, '--epochs', '2', '--lr', '0.2', '--method', 'bct_s',
                     '--resume', str(tmp_path / 'run')])
    with pytest.raises(FileNotFoundError, match='no checkpoint there'):
        resolve_run(['--resume', str(tmp_path / 'nothing')])


def _flat_saved_recipe(config: dict, method: str) -> dict:
    """A recipe as versions before the methods took options saved it: every option a top-level key."""
    flat = {key: value for key, value in config.items() if key != config['method']}
    flat.update(config[config['method']])
    for key in ('width_loss', 'projection', 'kd_teacher'):  # options that were step classes then
        flat.pop(key)
    return dict(flat, method=method)


def test_a_checkpoint_written_before_a_recipe_key_existed_resumes_with_that_keys_default(tmp_path):
    assert main(tiny_args(tmp_path, 'run', 2, '--stop-after', '1')) == 0
    state_file = tmp_path / 'run' / 'checkpoints' / 'last' / 'training_state.pt'
    state = torch.load(state_file, weights_only=True)
    # the flat recipe of the first reading, without the keys later than the run, as an older version wrote it
    state['config'] = _flat_saved_recipe(state['config'], 'sfsc_first_reading')
    for key in ('kd_temperature', 'projection_granularity', 'classifier', 'classifier_scale', 'lambda_cross_tri',
                'cross_tri_direction', 'widest_loss', 'gradient_merge'):
        del state['config'][key]
    torch.save(state, state_file)
    cfg, _, _, _ = resolve_run(['--resume', str(tmp_path / 'run')])
    options = cfg.options
    assert cfg.method == 'sfsc' and options.kd_temperature == 1.0 and options.projection_granularity == 'model'
    # what every sfsc method trained with before these two keys existed: the first reading's
    assert options.widest_loss == 'uncertainty' and options.gradient_merge == 'sum'
    assert (options.kl_coef, options.kl_anneal_epochs, options.priority) == (1.0, 2.0, 'uncertainty')
    assert cfg.classifier == 'linear' and cfg.classifier_scale is None
    assert options.lambda_cross_tri == 0.0 and options.cross_tri_direction == 'to_widest'
    # a value other than the default is still a different recipe
    with pytest.raises(ConfigError, match=r"differing keys: sfsc.projection_granularity: checkpoint 'model' vs now "
                                          r"'layer'"):
        resolve_run(['--resume', str(tmp_path / 'run'), '--projection-granularity', 'layer'])
    assert main(['--resume', str(tmp_path / 'run')]) == 0
    assert (tmp_path / 'run' / 'export' / 'model.safetensors').is_file()


@pytest.mark.parametrize('method', METHODS_BEFORE_THE_REFERENCE)
def test_every_methods_config_saved_before_the_reference_keys_still_resolves(method):
    """A flat run config saved before widest_loss / gradient_merge existed resumes with what it trained with."""
    from sfsc_timm.train.config import upgrade_saved_recipe
    from sfsc_timm.train.legacy import LEGACY_METHODS
    # what a flat config of the time held: every key, the method-specific ones at the first reading's values
    flat = _flat_saved_recipe(config_from_dict({}).to_dict(), method)
    flat.update(kl_coef=1.0, kl_anneal_epochs=10.0, priority='uncertainty')
    del flat['widest_loss'], flat['gradient_merge']
    cfg = config_from_dict(upgrade_saved_recipe(flat))  # not refused
    assert cfg.method == LEGACY_METHODS[method][0]
    if cfg.method.startswith('sfsc'):
        assert cfg.options.gradient_merge == 'sum'
        evidential = method in ('sfsc', 'sfsc_no_proj', 'sfsc_exp', 'sfsc_ipd')  # the widest on the uncertainty loss
        assert cfg.options.widest_loss == ('uncertainty' if evidential else 'cross_entropy')
        assert cfg.options.projection == ('none' if method == 'sfsc_no_proj' else 'pcgrad')
    else:
        assert not {'widest_loss', 'gradient_merge', 'priority'} & set(cfg.to_dict()[cfg.method])


def test_nonfinite_losses_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    original = SFSCStep.own_loss
    calls = {'n': 0}

    def poisoned(self, out, labels, epoch, widest=False):
        loss, u = original(self, out, labels, epoch, widest)
        calls['n'] += 1  # once per width and step
        # one bad step in epoch 1 (skipped, training goes on), then every step from epoch 2 on
        bad = epoch >= 1 or calls['n'] in (4, 5, 6)
        return (loss * float('nan') if bad else loss), u

    monkeypatch.setattr(SFSCStep, 'own_loss', poisoned)
    args = tiny_args(tmp_path, 'run', 3, '--max-nonfinite-steps', '3')
    assert main(args) == 1
    assert '3 consecutive steps had a non-finite loss (epoch 2' in capsys.readouterr().err
    last = tmp_path / 'run' / 'checkpoints' / 'last'
    state = load_training_state(last)
    assert state['epoch'] == 1 and state['nonfinite_total'] == 1
    records = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [(r['epoch'], r['skipped_steps']) for r in records] == [(1, 1)]
    assert not (tmp_path / 'run' / 'export').exists()


# --- nothing lost, nothing shared by accident (issue 12) ---

def test_a_run_killed_before_its_first_checkpoint_says_how_to_start_again(tmp_path, capsys):
    run = tmp_path / 'run'
    assert main(tiny_args(tmp_path, 'run', 1)) == 0
    shutil.rmtree(run / 'checkpoints')  # what a kill during the first epoch leaves: config.yaml, maybe metrics.jsonl
    shutil.rmtree(run / 'export')
    for argv in (tiny_args(tmp_path, 'run', 1), ['--resume', str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert 'before its first checkpoint' in err and f'remove {run}' in err and err.count('\n') == 1


def _file_bytes(folder: Path):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_a_run_folder_is_never_overwritten_and_a_torn_log_line_is_tolerated(tmp_path, capsys):
    run = tmp_path / 'run'
    assert main(tiny_args(tmp_path, 'run', 2, '--stop-after', '1')) == 0
    before = _file_bytes(run)
    # a new run into it, without --resume, would have wiped metrics.jsonl and config.yaml
    assert main(tiny_args(tmp_path, 'run', 2)) == 2
    err = capsys.readouterr().err
    assert f'{run} already holds a run' in err and f'--resume {run}' in err and 'another --output' in err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert _file_bytes(run) == before
    # killed while appending a line: the torn line is dropped and its epoch trained again
    with open(run / 'metrics.jsonl', 'a') as f:
        f.write('{"epoch": 2, "train_loss": 0.51, "conflic')
    assert main(['--resume', str(run)]) == 0
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2]


def test_killed_during_the_final_step_resume_and_export_complete_it(tmp_path, monkeypatch, capsys):
    from sfsc_timm.hub.export import main as export_main
    from sfsc_timm.train import trainer as trainer_module
    previous_umask = os.umask(0o022)
    try:
        run = tmp_path / 'run'

        def killed(*args, **kwargs):
            raise KeyboardInterrupt  # stands in for a kill while the export is written

        monkeypatch.setattr(trainer_module, 'plot_compatibility_heatmap', killed)
        assert main(tiny_args(tmp_path, 'run', 1)) == 130
        monkeypatch.undo()
        assert load_training_state(run / 'checkpoints' / 'last')['epoch'] == 1 and not (run / 'export').exists()
        # --resume runs just the missing final evaluation and export
        assert main(['--resume', str(run)]) == 0
        assert {p.name for p in (run / 'export').iterdir()} >= {'model.safetensors', 'metrics.json'}
        weights = _weights(run / 'checkpoints' / 'last')
        assert all(torch.equal(weights[k], v) for k, v in _weights(run / 'export').items())
        # so does sfsc-timm export, for a run killed the same way
        (run / 'export' / 'metrics.json').unlink()
        assert export_main([str(run), str(tmp_path / 'hub'), '--latency-repeats', '1']) == 0
        assert (run / 'export' / 'metrics.json').is_file() and (tmp_path / 'hub' / 'README.md').is_file()
        # and once complete, a resume says so
        capsys.readouterr()
        assert main(['--resume', str(run)]) == 2
        assert 'trained all 1 epochs and is exported' in capsys.readouterr().err
        # everything the run wrote follows the umask (0644 / 0755 under 022), as any other tool's files
        for path in [run, *run.rglob('*')]:
            assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    finally:
        os.umask(previous_umask)


def _hold_lock(run_dir: str, ready) -> None:
    from sfsc_timm.train.run_lock import RunLock
    RunLock(run_dir).acquire()
    ready.set()
    time.sleep(600)


def test_one_run_per_folder_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    from sfsc_timm.train.run_lock import RunLock
    context = multiprocessing.get_context('fork')
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path / 'run'), ready))
    holder.start()
    assert ready.wait(60)
    assert main(tiny_args(tmp_path, 'run', 1)) == 2
    err = capsys.readouterr().err
    assert f'another sfsc-timm train (pid {holder.pid}) is writing to {tmp_path / "run"}' in err
    assert not (tmp_path / 'run' / 'config.yaml').exists()
    os.kill(holder.pid, signal.SIGKILL)  # killed: the kernel drops its lock
    holder.join()
    with RunLock(tmp_path / 'run'):
        pass


def _reid_folder(root: Path, train_ids, per_id: int = 12) -> Path:
    from PIL import Image
    gen = np.random.default_rng(0)
    layout = {'bounding_box_train': (train_ids, per_id), 'query': ((50, 51), 2), 'bounding_box_test': ((50, 51), 4)}
    for folder, (ids, count) in layout.items():
        (root / folder).mkdir(parents=True)
        for identity in ids:
            for k in range(count):
                pixels = gen.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / folder / f'{identity:04d}_c{k % 2 + 1}s1_{k:06d}_00.png')
    return root


def test_one_class_and_unreadable_images_are_refused_before_training(tmp_path, capsys):
    args = ['-c', str(DEFAULT_RECIPE), *TINY, '--dataset', 'reid', '--max-train', 'none', '--batch-size', '4',
            '--val-fraction', '0.2']
    one_class = _reid_folder(tmp_path / 'one', train_ids=(1,))
    assert main([*args, '--data-dir', str(one_class), '--output', str(tmp_path / 'run1')]) == 2
    assert 'a classifier needs at least 2' in capsys.readouterr().err
    data = _reid_folder(tmp_path / 'three', train_ids=(1, 2, 3))
    broken = data / 'bounding_box_train' / '0002_c1s1_000003_00.png'
    broken.write_bytes(b'not a png')
    (data / 'bounding_box_test' / '0050_c2s1_000001_00.png').write_bytes(b'')
    assert main([*args, '--data-dir', str(data), '--output', str(tmp_path / 'run2')]) == 2
    err = capsys.readouterr().err
    assert '2 image file(s) cannot be read' in err and str(broken) in err and '0050_c2s1_000001_00.png' in err
    assert err.count('\n') == 1 and not (tmp_path / 'run2' / 'checkpoints').exists()


def test_non_finite_weights_never_reach_evaluation_and_the_advice_works(tmp_path, monkeypatch, capsys):
    # an overflowing gradient with a finite loss makes the weights NaN in epoch 2; every later step is then skipped,
    # but an epoch has fewer steps (6) than max_nonfinite_steps (50): the weights check must stop the run
    original = SFSCStep.__call__
    calls = {'n': 0}

    def overflow_at_step_8(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls['n'] += 1
        if calls['n'] == 8:
            with torch.no_grad():
                next(self.net.parameters()).fill_(float('nan'))
        return result

    monkeypatch.setattr(SFSCStep, '__call__', overflow_at_step_8)
    run = tmp_path / 'run'
    assert main(tiny_args(tmp_path, 'run', 3, '--max-nonfinite-steps', '50')) == 1
    err = capsys.readouterr().err
    assert 'after epoch 2 the weights are non-finite' in err and not (run / 'export').exists()
    assert load_training_state(run / 'checkpoints' / 'last')['epoch'] == 1
    assert [json.loads(line)['epoch'] for line in (run / 'metrics.jsonl').read_text().splitlines()] == [1]
    # the advice is a command the resume check accepts
    monkeypatch.undo()
    advised = re.search(r"'sfsc-timm train (--resume [^']+)'", err).group(1)
    assert main(advised.split()) == 0
    assert load_training_state(run / 'checkpoints' / 'last')['config']['clip_grad'] == 5.0
    assert (run / 'export' / 'metrics.json').is_file()
