"""ImageNet initialisation from plain timm weights, and ``last_stride``.

A plain timm network with random weights and random BatchNorm statistics stands in for timm's ImageNet checkpoint
(the Hub is unreachable here): saved locally and passed with ``pretrained_cfg_overlay=dict(file=...)``, it must come
back as the full width exactly, every narrower width as its leading slices, with a new neck and classifier.
"""
import json
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

import sfsc_timm
from sfsc_timm.models.checkpoint import CheckpointError
from sfsc_timm.models.checkpoint_io import WeightsUnavailableError

from conftest import SMALL_WIDTHS

X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(5))
PER_WIDTH = re.compile(r'\.per_width\.[^.]+\.')


def _plain(name):
    """timm's plain network with random weights and BatchNorm statistics far from their initial values."""
    torch.manual_seed(1)
    net = timm.create_model(name)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.fixture(scope='module', params=['resnet18', 'mobilenetv3_large_150d'])
def plain(request, tmp_path_factory):
    """(timm's network, its safetensors file with the classifier, the sfsc_* name)."""
    net = _plain(request.param)
    path = tmp_path_factory.mktemp(request.param) / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, path, f'sfsc_{request.param}'


@pytest.fixture(scope='module')
def resnet18(tmp_path_factory):
    net = _plain('resnet18')
    path = tmp_path_factory.mktemp('resnet18') / 'model.safetensors'
    save_file(net.state_dict(), str(path))
    return net, path


def _from_file(name, path, **kwargs):
    kwargs.setdefault('widths', SMALL_WIDTHS)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def _leading(tensor, like):
    return tensor[tuple(slice(0, n) for n in like.shape)] if like.ndim else tensor


def test_default_cfg_names_timms_weights_of_the_plain_architecture():
    for name in timm.list_models('sfsc_*'):
        plain = timm.models.get_pretrained_cfg(name.removeprefix('sfsc_'))
        ours = timm.models.get_pretrained_cfg(name)
        assert ours.hf_hub_id == plain.hf_hub_id, name
        assert ours.mean == plain.mean and ours.std == plain.std, name  # the weights' own normalisation
    assert timm.models.get_pretrained_cfg('sfsc_resnet50').hf_hub_id == 'timm/resnet50.a1_in1k'


def test_full_width_equals_timms_network(plain):
    net, path, name = plain
    ours = _from_file(name, path)
    with torch.no_grad():
        assert (ours.forward_features(X) - net.forward_features(X)).abs().max() <= 1e-5


def test_every_width_is_leading_slices_of_timms_tensors(plain):
    net, path, name = plain
    timm_state = net.state_dict()
    supernet = _from_file(name, path).backbone.state_dict()
    for key, tensor in supernet.items():  # convs: the full tensor; each width's BatchNorm: leading slices
        assert torch.equal(tensor, _leading(timm_state[PER_WIDTH.sub('.', key)], tensor)), key
    static = _from_file(name, path, width=0.25).backbone.state_dict()
    assert static['blocks.1.0.bn1.weight' if 'mobile' in name else 'layer1.0.bn1.running_var'].shape[0] < 64
    for key, tensor in static.items():
        assert torch.equal(tensor, _leading(timm_state[key], tensor)), key


def test_classifier_and_neck_are_not_taken_from_timm(resnet18):
    net, path = resnet18
    torch.manual_seed(0)
    ours = _from_file('sfsc_resnet18', path, num_classes=1000)  # the same shape as timm's fc
    torch.manual_seed(0)
    fresh = timm.create_model('sfsc_resnet18', widths=SMALL_WIDTHS, num_classes=1000)
    assert ours.head.weight.shape == net.fc.weight.shape and not torch.equal(ours.head.weight, net.fc.weight)
    for part in ('neck', 'head'):  # initialised as without pretrained weights
        theirs = getattr(fresh, part).state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in getattr(ours, part).state_dict().items()), part


def test_a_weights_only_torch_file_or_a_state_dict_maps_the_same(resnet18, tmp_path):
    net, path = resnet18
    torch.save({'state_dict': net.state_dict(), 'epoch': 3}, tmp_path / 'checkpoint.pth.tar')  # timm train.py's
    from_torch = _from_file('sfsc_resnet18', tmp_path / 'checkpoint.pth.tar').state_dict()
    from_safetensors = _from_file('sfsc_resnet18', path).state_dict()
    assert all(torch.equal(v, from_safetensors[k]) for k, v in from_torch.items() if not k.startswith(('neck', 'head')))
    # timm's highest-priority location, a state dict in the cfg, is mapped too (not replaced by a download)
    from_state = timm.create_model('sfsc_resnet18', widths=SMALL_WIDTHS, pretrained=True,
                                   pretrained_cfg_overlay=dict(state_dict=net.state_dict())).state_dict()
    assert all(torch.equal(v, from_safetensors[k]) for k, v in from_state.items() if not k.startswith(('neck', 'head')))


def test_an_sfsc_checkpoint_through_the_same_overlay_loads_as_saved(small_net, saved_net, tmp_path):
    loaded = _from_file('sfsc_resnet18', saved_net / 'model.safetensors', embed_dim=96, num_classes=7)
    expected = small_net.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    torch.save(small_net.state_dict(), tmp_path / 'sfsc.pth')  # never unpickled as a supernet: refused by name
    with pytest.raises(CheckpointError, match='holds an SFSC network outside a safetensors file.*sfsc_timm.save'):
        _from_file('sfsc_resnet18', tmp_path / 'sfsc.pth', embed_dim=96, num_classes=7)


def test_plain_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / 'resnet10t.safetensors'
    save_file(timm.create_model('resnet10t').state_dict(), str(path))
    with pytest.raises(CheckpointError, match='plain timm checkpoint that does not fit ResNet.*missing tensors'):
        _from_file('sfsc_resnet18', path)


def test_one_input_channel_is_adapted_as_timm_does(resnet18):
    net, path = resnet18
    ours = _from_file('sfsc_resnet18', path, in_chans=1)
    assert torch.allclose(ours.backbone.conv1.weight, net.conv1.weight.sum(dim=1, keepdim=True))


def test_offline_without_a_cache_names_the_hub_id_and_the_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    # huggingface_hub reads the environment once, at import
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path / 'hf' / 'hub'))
    hub_id = timm.models.get_pretrained_cfg('resnet18').hf_hub_id
    with pytest.raises(WeightsUnavailableError) as error:
        timm.create_model('sfsc_resnet18', pretrained=True)
    message = str(error.value)
    assert hub_id in message and "pretrained_cfg_overlay=dict(file='PATH/model.safetensors')" in message
    assert 'pretrained_file' in message and '\n' not in message


def test_last_stride_one_gives_16x8_at_256x128_and_survives_save_and_load(tmp_path):
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(2))
    net = timm.create_model('sfsc_resnet18', widths=SMALL_WIDTHS, embed_dim=32, last_stride=1).eval()
    static = sfsc_timm.extract(net, 0.25)
    with torch.no_grad():
        for width in (1.0, 0.25):
            with net.width(width):
                assert net.forward_features(x).shape[-2:] == (16, 8), width
        assert static.forward_features(x).shape[-2:] == (16, 8)
        assert timm.create_model('sfsc_resnet18', widths=SMALL_WIDTHS).eval().forward_features(x).shape[-2:] == (8, 4)
    assert net.feature_info[-1]['reduction'] == 16 and net.pretrained_cfg['pool_size'] == (16, 8)
    folder = sfsc_timm.save(net, tmp_path / 'supernet')
    assert json.loads((folder / 'config.json').read_text())['model_args']['last_stride'] == 1
    static_folder = sfsc_timm.save(static, tmp_path / 'static')
    with torch.no_grad():
        for width in (1.0, 0.25):
            loaded = sfsc_timm.load(folder, width=width).eval()
            assert loaded.last_stride == 1 and loaded.forward_features(x).shape[-2:] == (16, 8), width
        reloaded = sfsc_timm.load(folder).eval()
        assert torch.equal(reloaded(x), net(x))
        assert torch.equal(sfsc_timm.load(static_folder, width=0.25).eval()(x), static(x))


def test_last_stride_keeps_the_weights_of_the_pretrained_mapping(resnet18):
    _, path = resnet18
    torch.manual_seed(0)
    strided = _from_file('sfsc_resnet18', path).state_dict()
    torch.manual_seed(0)
    unstrided = _from_file('sfsc_resnet18', path, last_stride=1).state_dict()
    assert strided.keys() == unstrided.keys() and all(torch.equal(v, unstrided[k]) for k, v in strided.items())


def test_last_stride_one_on_mobilenetv3_and_bad_values():
    net = timm.create_model('sfsc_mobilenetv3_large_150d', widths=SMALL_WIDTHS, embed_dim=32, last_stride=1).eval()
    with torch.no_grad():
        assert net.forward_features(X).shape[-2:] == (4, 2)  # 64x32 at a total stride of 16
        assert sfsc_timm.extract(net, 0.25).forward_features(X).shape[-2:] == (4, 2)
    for bad in (0, 3, True, '1'):
        with pytest.raises(ValueError, match='last_stride must be 2 .* or 1'):
            timm.create_model('sfsc_resnet18', last_stride=bad, device='meta')
