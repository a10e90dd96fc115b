"""Switchable layers: the channel rule, and each dynamic layer equals its static counterpart at every width."""
import pytest
import torch
from torch import nn
from timm.layers import BatchNormAct2d

from sfsc_timm.layers import (
    SwitchableBatchNorm1d, SwitchableBatchNorm2d, SwitchableBatchNormAct2d, SwitchableConv2d, SwitchableLinear,
    check_width, check_widths, convert_to_switchable, switchable_layers, to_static, width_channels,
)

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def _static(layer, width):
    state = layer.state_dict()
    return to_static(layer, width, lambda key, index: state[key][index].clone() if index else state[key].clone())


def test_channel_rule():
    assert [width_channels(256, w) for w in WIDTHS] == [64, 128, 192, 256]
    assert width_channels(16, 0.25) == 8  # make_divisible's floor of one divisor
    assert width_channels(3, 0.25) == 3  # never wider than the full layer
    assert width_channels(3, 1.0) == 3


@pytest.mark.parametrize('bad', [0, -0.5, 1.5, float('nan'), '0.5', True])
def test_bad_width_is_rejected(bad):
    with pytest.raises(ValueError, match='width must be'):
        check_width(bad)


def test_widths_must_include_full_width():
    with pytest.raises(ValueError, match='include the full width 1.0'):
        check_widths((0.25, 0.5))
    assert check_widths((1.0, 0.5, 0.5)) == (0.5, 1.0)


@pytest.mark.parametrize('width', WIDTHS)
def test_conv_linear_norm_equal_their_static_layers(width):
    x = torch.randn(3, 32, 9, 9)
    layers = [
        (SwitchableConv2d.convert_from(nn.Conv2d(32, 48, 3, padding=1), WIDTHS), x, nn.Conv2d),
        (SwitchableConv2d.convert_from(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), WIDTHS), x, nn.Conv2d),
        (SwitchableConv2d.convert_from(nn.Conv2d(32, 16, 1), WIDTHS, slice_in=False), x, nn.Conv2d),
        (SwitchableLinear.convert_from(nn.Linear(32, 24), WIDTHS), x[:, :, 0, 0], nn.Linear),
        (SwitchableBatchNorm2d.convert_from(nn.BatchNorm2d(32), WIDTHS), x, nn.BatchNorm2d),
        (SwitchableBatchNormAct2d.convert_from(BatchNormAct2d(32, act_layer=nn.ReLU), WIDTHS), x, BatchNormAct2d),
        (SwitchableBatchNorm1d(32, widths=WIDTHS), x[:, :, 0, 0], nn.BatchNorm1d),
    ]
    for layer, inp, static_cls in layers:
        layer.set_width(width)
        if getattr(layer, 'slice_in', True) and getattr(layer, 'slice_channels', True):
            inp = inp[:, :width_channels(32, width)]
        layer.train()
        layer(inp)  # move the active width's running statistics
        layer.eval()
        static = _static(layer, width).eval()
        assert type(static) is static_cls
        torch.testing.assert_close(static(inp), layer(inp), rtol=0, atol=1e-6)


def test_depthwise_conv_slices_its_groups():
    conv = SwitchableConv2d.convert_from(nn.Conv2d(64, 64, 3, groups=64), WIDTHS)
    static = _static(conv, 0.25)
    assert static.groups == static.in_channels == static.out_channels == 16


def test_per_width_batchnorm_keeps_private_statistics():
    bn = SwitchableBatchNorm2d.convert_from(nn.BatchNorm2d(16), (0.5, 1.0))
    bn.train().set_width(0.5)
    bn(torch.randn(4, 8, 3, 3) + 5)
    assert bn.per_width['0_5'].running_mean.mean() > 0.3
    assert torch.equal(bn.running_mean, torch.zeros(16))  # the full width did not see that batch
    assert set(bn.state_dict()) >= {'weight', 'running_mean', 'per_width.0_5.weight', 'per_width.0_5.running_var'}


def test_converter_rejects_layers_without_counterpart():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8))
    with pytest.raises(TypeError, match='PReLU.*no switchable counterpart'):
        convert_to_switchable(model, WIDTHS, input_layers=['0'])


def test_converter_rejects_grouped_conv():
    with pytest.raises(ValueError, match='Grouped conv'):
        convert_to_switchable(nn.Sequential(nn.Conv2d(32, 64, 3, groups=4)), WIDTHS)


def test_converter_shares_parameters_and_keeps_input_channels():
    conv = nn.Conv2d(3, 16, 3)
    model = convert_to_switchable(nn.Sequential(conv, nn.BatchNorm2d(16)), WIDTHS, input_layers=['0'])
    assert model[0].weight is conv.weight
    assert set(switchable_layers(model)) == {'0', '1'}
    model[0].set_width(0.25)
    assert model[0].active_in == 3 and model[0].active_out == 8
