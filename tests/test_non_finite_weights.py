""" Non-finite weights are refused where they enter (every load path) and where they leave (save, export-width's
parity check), with one line naming the tensor. """
import math

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import sfsc_timm
from sfsc_timm.hub import deploy
from sfsc_timm.models.checkpoint import CheckpointError

BAD_KEY = 'backbone.conv1.weight'


def _net():
    torch.manual_seed(0)
    return timm.create_model('sfsc_resnet18', num_classes=3, widths=(0.5, 1.0), embed_dim=16,
                             pretrained_cfg_overlay=dict(input_size=(3, 16, 16))).eval()


@pytest.fixture(scope='module')
def nan_checkpoint(tmp_path_factory):
    folder = sfsc_timm.save(_net(), tmp_path_factory.mktemp('nan') / 'ckpt')
    weights = folder / 'model.safetensors'
    state = load_file(weights)
    assert BAD_KEY in state
    state[BAD_KEY] = torch.full_like(state[BAD_KEY], math.nan)
    save_file(state, weights, metadata={'format': 'pt'})  # what a diverged run or a corrupted copy leaves
    return folder


@pytest.mark.parametrize('load', [
    lambda f: sfsc_timm.load(f),
    lambda f: sfsc_timm.load(f, width=0.5),
    lambda f: timm.create_model(f'local-dir:{f}', pretrained=True),
    lambda f: timm.create_model('sfsc_resnet18', pretrained=True, widths=(0.5, 1.0), embed_dim=16, num_classes=3,
                                pretrained_cfg_overlay=dict(file=str(f / 'model.safetensors'))),
], ids=['load', 'load_width', 'local_dir', 'create_model_file'])
def test_every_load_refuses_nan_weights_naming_the_tensor(nan_checkpoint, load):
    with pytest.raises(Exception, match=rf'{BAD_KEY} holds non-finite values') as info:
        load(nan_checkpoint)
    assert len(str(info.value).splitlines()) == 1


def test_save_refuses_nan_weights_and_writes_nothing(tmp_path):
    net = _net()
    with torch.no_grad():
        net.state_dict()[BAD_KEY].fill_(math.inf)
    with pytest.raises(CheckpointError, match=rf'{BAD_KEY} holds non-finite values'):
        sfsc_timm.save(net, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_export_width_refuses_nan_weights_in_one_line(nan_checkpoint, tmp_path, capsys):
    code = deploy.main([str(nan_checkpoint), '--width', '0.5', '--format', 'torchscript',
                        '--output', str(tmp_path / 'w.pt')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and BAD_KEY in err
    assert not (tmp_path / 'w.pt').exists()


def test_the_parity_check_treats_nan_as_a_mismatch(tmp_path, monkeypatch):
    folder = sfsc_timm.save(_net(), tmp_path / 'ckpt')
    exporter = deploy._EXPORTERS['torchscript']

    def nan_model(model, sample, path, metadata):  # an export whose model returns NaN
        run = exporter(model, sample, path, metadata)
        return lambda x: run(x) * math.nan

    monkeypatch.setitem(deploy._EXPORTERS, 'torchscript', nan_model)
    with pytest.raises(deploy.DeployError, match='differs from PyTorch by up to inf'):
        deploy.export_width(folder, 0.5, 'torchscript', tmp_path / 'w.pt')
    assert not (tmp_path / 'w.pt').exists()


def test_embed_refuses_non_finite_embeddings_and_writes_nothing(tmp_path, capsys):
    from PIL import Image

    from sfsc_timm.inference import cli as embed_cli
    from sfsc_timm.inference import embed_images
    images = tmp_path / 'images'
    images.mkdir()
    for k in range(3):
        Image.new('RGB', (16, 16), (40 * k, 10, 200)).save(images / f'{k}.png')
    net = _net()
    with torch.no_grad():
        net.state_dict()[BAD_KEY].fill_(math.nan)  # a network in memory skips the checkpoint reader's check
    with pytest.raises(ValueError, match=r'embedding of 0\.png .* is not finite'):
        embed_images(net, images, tmp_path / 'out.parquet', width=0.5, progress=False)
    assert not (tmp_path / 'out.parquet').exists() and not list(tmp_path.glob('.out.parquet*'))
    # from a checkpoint the reader refuses it first, in one line, exit 2
    folder = tmp_path / 'ckpt'
    sfsc_timm.save(_net(), folder)
    state = load_file(folder / 'model.safetensors')
    state[BAD_KEY] = torch.full_like(state[BAD_KEY], math.nan)
    save_file(state, folder / 'model.safetensors', metadata={'format': 'pt'})
    code = embed_cli.main([str(folder), str(images), '--output', str(tmp_path / 'o.parquet'), '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and BAD_KEY in err
