"""Registered models: supernet and static sub-models agree, follow timm conventions, and shrink as width²."""
import numpy as np
import pytest
import timm
import torch
from timm.models import MobileNetV3, ResNet
from torch import nn

import sfsc_timm
from sfsc_timm.layers import SwitchableLayer

from conftest import SMALL_INPUT

MODELS = {
    'sfsc_resnet10t': ResNet,
    'sfsc_resnet18': ResNet,
    'sfsc_resnet34': ResNet,
    'sfsc_resnet50': ResNet,
    'sfsc_resnet101': ResNet,
    'sfsc_mobilenetv3_large_150d': MobileNetV3,
}


def test_every_sfsc_model_is_registered_with_timm():
    assert set(timm.list_models('sfsc_*')) == set(MODELS)


@pytest.mark.parametrize('name', MODELS)
def test_static_sub_models_equal_the_supernet(name, tmp_path):
    net = timm.create_model(name, num_classes=5)
    with torch.no_grad():
        for width in net.widths:  # give every width its own BatchNorm statistics
            with net.width(width):
                net(torch.randn(*SMALL_INPUT))
    net.eval()
    x = torch.randn(*SMALL_INPUT)
    full_params = None
    for width in sorted(net.widths, reverse=True):
        sub = sfsc_timm.extract(net, width).eval()
        with torch.no_grad(), net.width(width):
            expected = net(x)
            expected_emb = net.forward_head(net.forward_features(x), pre_logits=True)
            got = sub(x)
            features = sub.forward_features(x)
            got_emb = sub.forward_head(features, pre_logits=True)
            assert sub.num_features == net.num_features == features.shape[1]  # channels at this width
        assert (got - expected).abs().max() < 1e-4
        assert (got_emb - expected_emb).abs().max() < 1e-4
        assert type(sub.backbone) is MODELS[name]
        assert not any(isinstance(m, SwitchableLayer) for m in sub.modules())
        assert sub.head_hidden_size == net.head_hidden_size == got_emb.shape[1]  # D at every width
        params = sum(p.numel() for p in sub.backbone.parameters())
        full_params = full_params or params
        assert abs(params / (width ** 2 * full_params) - 1) <= 0.10, (width, params, full_params)
        if width == 1.0:
            sfsc_timm.save(net, tmp_path / name)
        loaded = timm.create_model(f'local-dir:{tmp_path / name}', width=width, pretrained=True).eval()
        assert type(loaded.backbone) is MODELS[name]
        state, expected_state = loaded.state_dict(), sub.state_dict()
        assert state.keys() == expected_state.keys()
        assert all(torch.equal(state[k], expected_state[k]) for k in state)  # the same weights, exactly
        with torch.no_grad():
            assert torch.equal(loaded(x), got)


def test_width_argument_gives_a_static_sub_model():
    sub = timm.create_model('sfsc_resnet18', width=0.25, num_classes=3)
    assert isinstance(sub, sfsc_timm.EmbeddingNet) and not hasattr(sub, 'set_width')
    assert sub.active_width == 0.25
    assert isinstance(sub.backbone.conv1, nn.Conv2d) and sub.backbone.conv1.out_channels == 16
    assert sub(torch.randn(*SMALL_INPUT)).shape == (2, 3)


def test_supernet_switching():
    net = timm.create_model('sfsc_resnet18', widths=(0.5, 1.0), embed_dim=64).eval()
    assert net.widths == (0.5, 1.0) and net.active_width == 1.0
    x = torch.randn(*SMALL_INPUT)
    with net.width(0.5):
        assert net.active_width == 0.5
        assert net.forward_features(x).shape[1] == 256
        assert net(x).shape == (2, 64)  # num_classes=0: forward gives the embedding
    assert net.active_width == 1.0 and net.forward_features(x).shape[1] == 512
    assert net.set_width(0.5) is net and net.backbone.layer1[0].conv1.active_width == 0.5


def test_forward_does_not_change_with_mode():
    net = timm.create_model('sfsc_resnet18', num_classes=4)
    x = torch.randn(*SMALL_INPUT)
    assert net.train()(x).shape == net.eval()(x).shape == (2, 4)


def test_timm_conventions():
    net = timm.create_model('sfsc_resnet50', num_classes=10, embed_dim=256)
    assert net.head_hidden_size == net.embed_dim == 256 and net.num_features == 2048
    assert net.pretrained_cfg['input_size'] == (3, 256, 128) and net.pretrained_cfg['architecture'] == 'sfsc_resnet50'
    assert [f['num_chs'] for f in net.feature_info] == [64, 256, 512, 1024, 2048]
    assert net.feature_info[1]['module'] == 'backbone.layer1'
    assert [f['num_chs'] for f in net.channels_at(0.25)] == [16, 64, 128, 256, 512]
    net.reset_classifier(3)
    assert net.get_classifier().out_features == 3 and net.num_classes == 3
    net.reset_classifier(0)
    assert net.eval()(torch.randn(*SMALL_INPUT)).shape == (2, 256)
    cfg = timm.data.resolve_data_config({}, model=net)
    assert cfg['input_size'] == (3, 256, 128)
    sub = timm.create_model('sfsc_resnet50', width=0.5, embed_dim=256)
    assert [f['num_chs'] for f in sub.feature_info] == [32, 128, 256, 512, 1024]
    assert sub.backbone.num_features == sub.num_features == 1024 and sub.head_hidden_size == 256


@pytest.mark.parametrize('name', ['sfsc_resnet18', 'sfsc_mobilenetv3_large_150d'])
def test_features_only_static_sub_model(name):
    features = timm.create_model(name, width=0.5, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    outs = features(torch.randn(*SMALL_INPUT))
    assert [o.shape[1] for o in outs] == features.feature_info.channels()
    assert len(outs) == 4


@pytest.mark.parametrize('name', ['sfsc_resnet18', 'sfsc_mobilenetv3_large_150d'])
def test_static_sub_model_scripts_and_exports(name):
    sub = timm.create_model(name, width=0.25, num_classes=4).eval()
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        expected = sub(x)
        torch.testing.assert_close(torch.jit.script(sub)(x), expected)
        torch.testing.assert_close(torch.export.export(sub, (x,)).module()(x), expected)


@pytest.mark.parametrize('width', [0, -1, 1.5])
def test_out_of_range_width(width):
    with pytest.raises(ValueError, match=r'width must be in \(0, 1\]'):
        timm.create_model('sfsc_resnet18', width=width)


def test_untrained_width_names_the_available_widths():
    with pytest.raises(ValueError, match=r'width 0.3 is not one of the widths \(0.25, 0.5, 0.75, 1.0\)'):
        timm.create_model('sfsc_resnet18', width=0.3)
    net = timm.create_model('sfsc_resnet18', widths=(0.5, 1.0))
    with pytest.raises(ValueError, match=r'not one of the widths \(0.5, 1.0\) of this network'):
        net.set_width(0.25)
    with pytest.raises(ValueError, match=r'not one of the widths \(0.5, 1.0\) of this network'):
        sfsc_timm.extract(net, 0.75)
    # numpy numbers are numbers: one check for every width argument
    assert net.set_width(np.float32(0.5)).active_width == 0.5 and type(net.active_width) is float
    assert sfsc_timm.extract(net, np.float64(0.5)).active_width == 0.5


def test_pretrained_without_weights_says_where_to_load_from():
    # the default cfg names timm's ImageNet weights (tests/test_pretrained_init.py); a cfg naming none says this
    with pytest.raises(RuntimeError, match='local-dir:FOLDER'):
        timm.create_model('sfsc_resnet18', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=None))
