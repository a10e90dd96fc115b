"""timm's model contract on every registered model, supernet (at every width) and static sub-models.

These are the properties timm's own model test suite checks (forward, backward, default config shapes,
reset_classifier with and without pooling, TorchScript, features_only, forward_intermediates, torch.fx), plus
torch.compile, gradient checkpointing, prune_intermediate_layers, in_chans on a pretrained load and
timm.models.load_checkpoint of one width. Where a suite test cannot hold for a supernet by design (every parameter
gets a gradient from one forward), the equivalent property is checked here (README, "timm's model test suite").
"""
import contextlib
import functools
import math

import pytest
import timm
import torch
from timm.models import FeatureInfo, load_checkpoint
from torch import nn

import sfsc_timm
from sfsc_timm.layers import width_channels

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*` is deprecated:FutureWarning')

ALL = ['sfsc_resnet18', 'sfsc_resnet34', 'sfsc_resnet50', 'sfsc_resnet101', 'sfsc_mobilenetv3_large_150d']
# the two families; the ResNet's Bottleneck (sfsc_resnet50) is scripted below and shaped in the first test
FAMILIES = ['sfsc_resnet18', 'sfsc_mobilenetv3_large_150d']
WIDTHS = (0.25, 0.5, 1.0)
SMALL = dict(input_size=(3, 64, 32), pool_size=(2, 1))  # a 64x32 input keeps every test fast on a CPU


def _x(batch=2, size=SMALL['input_size']):
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(3))


def _build(name, width=None, **kwargs):
    """A supernet at `width` (switched), or the static sub-model at `width` when static=True."""
    static = kwargs.pop('static', False)
    net = timm.create_model(name, widths=WIDTHS, embed_dim=48, pretrained_cfg_overlay=SMALL,
                            width=width if static else None, **kwargs)
    if width is not None and not static:
        net.set_width(width)
    return net


def _id(param):
    return str(param)


@functools.lru_cache()
def _timm_num_features(name):
    """num_features of timm's own backbone (built on the meta device: no memory, no time)."""
    return timm.create_model(name.removeprefix('sfsc_'), num_classes=0, device='meta').num_features


@pytest.mark.parametrize('name', ALL)
def test_num_features_head_hidden_size_and_pool_size(name):
    # shapes only, at the registered input size (256x128), on the meta device: every model, at no cost
    net = timm.create_model(name, widths=WIDTHS, embed_dim=48, device='meta').eval()
    size = net.pretrained_cfg['input_size']
    models = [(w, False, net) for w in WIDTHS] + [(w, True, sfsc_timm.extract(net, w)) for w in (0.25, 1.0)]
    for width, static, model in models:
        with contextlib.nullcontext() if static else model.width(width):
            features = model.forward_features(torch.empty(2, *size, device='meta'))
            pre_logits = model.forward_head(features, pre_logits=True)
            # num_features: channels of forward_features' output at the active width; head_hidden_size: D
            assert features.shape[1] == model.num_features == width_channels(_timm_num_features(name), width)
        assert tuple(features.shape[2:]) == model.pretrained_cfg['pool_size'] == (8, 4)
        assert pre_logits.shape == (2, model.head_hidden_size) and model.head_hidden_size == model.embed_dim == 48
        assert model.pretrained_cfg['first_conv'] + '.weight' in model.state_dict()


@pytest.mark.parametrize('name, width, static', [
    ('sfsc_resnet18', 0.25, False), ('sfsc_resnet18', 1.0, False), ('sfsc_resnet18', 0.25, True),
    ('sfsc_mobilenetv3_large_150d', 0.5, False), ('sfsc_mobilenetv3_large_150d', 1.0, True)], ids=_id)
def test_reset_classifier_and_global_pool(name, width, static):
    net = _build(name, width, static=static, num_classes=5).eval()
    x = _x()
    with torch.no_grad():
        embedding = net.forward_head(net.forward_features(x), pre_logits=True)
        assert net(x).shape == (2, 5)
        net.reset_classifier(0)
        assert net.num_classes == 0 and torch.equal(net(x), embedding)  # forward is the embedding now
        net.reset_classifier(0, global_pool='')  # no pooling: an embedding per position
        dense = net(x)
        assert dense.shape == (2, 48, *SMALL['pool_size'])
        if 'resnet' in name:  # pooling, then an affine neck: the positions' mean is the embedding (MobileNetV3's
            torch.testing.assert_close(dense.mean((2, 3)), embedding, rtol=1e-4, atol=1e-5)  # head conv is not)
        net.reset_classifier(3, global_pool='avg')
        assert net(x).shape == (2, 3)
    with pytest.raises(ValueError, match='needs|classifier cannot'):
        net.reset_classifier(3, global_pool='')
    with pytest.raises(ValueError, match='multiplies the channels'):
        net.reset_classifier(0, global_pool='catavgmax')
    unpooled = _build(name, width, static=static, num_classes=0, global_pool='').eval()
    with torch.no_grad():
        assert unpooled(x).shape == (2, 48, *SMALL['pool_size'])


@pytest.mark.parametrize('name', FAMILIES)
def test_backward_reaches_what_each_width_uses(name):
    # timm's test_model_backward wants a gradient on every parameter from one forward. A supernet computes one width
    # per forward, so the other widths' private BatchNorms get none, by design; the equivalent: one width's forward
    # reaches exactly the shared tensors and its own BatchNorms, and the widths together reach every parameter.
    net = _build(name, num_classes=42).train()
    reached = set()
    for width in WIDTHS:
        net.zero_grad(set_to_none=True)
        with net.width(width):
            out = net(_x())
        assert out.shape == (2, 42) and not out.isnan().any()
        out.mean().backward()
        got = {n for n, p in net.named_parameters() if p.grad is not None}
        private = {n for n in got if '.per_width.' in n}
        if width == 1.0:
            assert not private
        else:
            assert private and all(f'.per_width.{str(width).replace(".", "_")}.' in n for n in private)
        reached |= got
    assert reached == {n for n, _ in net.named_parameters()}
    sub = _build(name, 0.25, static=True, num_classes=42).train()
    sub(_x()).mean().backward()
    assert all(p.grad is not None for p in sub.parameters())  # a static sub-model: every parameter, as timm asks


@pytest.mark.parametrize('name', FAMILIES)
def test_gradient_checkpointing_changes_nothing(name):
    net = _build(name, 0.5, num_classes=4).train()
    x = _x()
    torch.manual_seed(0)
    plain = net(x)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    net.set_grad_checkpointing(True)
    torch.manual_seed(0)
    checkpointed = net(x)
    checkpointed.sum().backward()
    torch.testing.assert_close(checkpointed, plain)
    for n, p in net.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name, width, static', [
    ('sfsc_resnet18', 0.25, False), ('sfsc_resnet18', 1.0, False), ('sfsc_resnet18', 0.25, True),
    ('sfsc_resnet50', 0.5, False), ('sfsc_resnet50', 1.0, True),
    ('sfsc_mobilenetv3_large_150d', 0.5, False), ('sfsc_mobilenetv3_large_150d', 1.0, True)], ids=_id)
def test_forward_intermediates(name, width, static):
    net = _build(name, width, static=static).eval()
    x = _x(1)
    info = FeatureInfo(net.feature_info, len(net.feature_info))
    with torch.no_grad():
        final, intermediates = net.forward_intermediates(x, output_fmt='NCHW')
        torch.testing.assert_close(final, net.forward_features(x))
        assert [t.shape[1] for t in intermediates] == info.channels()
        for t, reduction in zip(intermediates, info.reduction()):
            assert t.shape[2] <= math.ceil(64 / reduction) + 1 and t.shape[3] <= math.ceil(32 / reduction) + 1
        last_two = net.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in intermediates[-2:]]
        net.set_grad_checkpointing(True)
        torch.testing.assert_close(net.forward_intermediates(x)[0], final)


@pytest.mark.parametrize('static', [False, True])
def test_prune_intermediate_layers(static):
    net = _build('sfsc_resnet18', 0.5, static=static, num_classes=3).eval()
    x = _x(1)
    with torch.no_grad():
        expected = net.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        kept = net.prune_intermediate_layers(indices=[1, 2])
        assert kept == [1, 2]
        assert not [p for layer in (net.backbone.layer3, net.backbone.layer4) for p in layer.parameters()]
        assert isinstance(net.neck, nn.Identity) and net.num_classes == 0
        got = net.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize('name', FAMILIES)
def test_features_only_supernet_at_its_active_width(name):
    features = timm.create_model(name, widths=WIDTHS, features_only=True, pretrained_cfg_overlay=SMALL).eval()
    x = _x(1)
    full = features.feature_info.channels()  # the supernet starts at the full width
    for width in (1.0, 0.25, 0.5):
        features.set_width(width)
        with torch.no_grad():
            outs = features(x)
        assert [o.shape[1] for o in outs] == features.feature_info.channels() == [width_channels(c, width)
                                                                                  for c in full]
        assert len(outs) >= 3
        for o, reduction in zip(outs, features.feature_info.reduction()):
            assert o.shape[2] <= math.ceil(64 / reduction) + 1
    with features.width(0.25):
        assert features.model.active_width == 0.25
    assert features.model.active_width == 0.5


def test_features_only_of_a_loaded_checkpoint_matches_forward_intermediates(saved_net, small_net):
    x = _x(1)
    for width in (None, 0.5):
        features = timm.create_model(f'local-dir:{saved_net}', pretrained=True, features_only=True, width=width,
                                     out_indices=(1, 2, 3)).eval()
        if width is None:
            features.set_width(0.5)
        with torch.no_grad(), small_net.width(0.5):
            expected = small_net.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
            got = features(x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected)), width


def test_feature_cls_other_than_getter_is_refused():
    with pytest.raises(ValueError, match="'getter'"):
        timm.create_model('sfsc_resnet18', features_only=True, feature_cls='hook')


@pytest.mark.parametrize('name, width, static', [('sfsc_resnet18', 0.25, False), ('sfsc_resnet18', 1.0, False),
                                                 ('sfsc_resnet18', 0.5, True), ('sfsc_resnet50', 0.5, False),
                                                 ('sfsc_mobilenetv3_large_150d', 0.5, False)], ids=_id)
def test_torchscript_at_a_fixed_width(name, width, static):
    net = _build(name, width, static=static, num_classes=3).eval()
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


@pytest.mark.parametrize('name, width, static', [(n, w, s) for n in FAMILIES for w, s in [(0.5, False), (0.25, True)]],
                         ids=_id)
def test_fx_trace_at_a_fixed_width(name, width, static):
    net = _build(name, width, static=static, num_classes=3).eval()
    x = _x()
    graph = torch.fx.symbolic_trace(net)
    with torch.no_grad():
        assert torch.equal(graph(x), net(x))
    if not static:  # the graph holds the width it was traced at
        assert net.active_width == width


def test_fx_feature_extractor_as_timm_suite_builds_it():
    # timm's suite traces with torchvision's feature extractor and timm's leaf modules, trains through the graph and
    # scripts it; BatchNormAct2d (MobileNetV3) is one of those leaves
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    from timm.models import get_notrace_functions, get_notrace_modules
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    for name in ('sfsc_resnet18', 'sfsc_mobilenetv3_large_150d'):
        net = _build(name, 0.5, num_classes=6)
        net.train()(_x()).mean().backward()
        used = {n for n, p in net.named_parameters() if p.grad is not None}
        net.zero_grad(set_to_none=True)
        train_nodes, eval_nodes = get_graph_node_names(net, tracer_kwargs=tracer_kwargs)
        fx_net = create_feature_extractor(net, train_return_nodes=[train_nodes[-1]],
                                          eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)
        out = tuple(fx_net.train()(_x()).values())[0]
        out.mean().backward()
        # the graph trains exactly what the supernet trains at this width (timm's test_model_backward_fx asks for
        # every parameter of the module: by design not the other widths' private BatchNorms, see the README)
        assert out.shape == (2, 6) and {n for n, p in fx_net.named_parameters() if p.grad is not None} == used
        scripted = torch.jit.script(fx_net.eval())
        with torch.no_grad():
            torch.testing.assert_close(tuple(scripted(_x()).values())[0], net.eval()(_x()))


@pytest.mark.parametrize('name, widths', [('sfsc_resnet18', (0.25, 1.0, 0.5)), ('sfsc_mobilenetv3_large_150d', (0.5,))])
def test_torch_compile_follows_the_width(name, widths):
    net = _build(name, widths[0], num_classes=3).eval()
    compiled = torch.compile(net, backend='eager', fullgraph=True)  # fullgraph: no graph break anywhere
    x = _x()
    with torch.no_grad():
        for width in widths:
            net.set_width(width)  # guards on the layers' width recompile: never a stale width
            torch.testing.assert_close(compiled(x), net(x))


def test_in_chans_is_adapted_on_a_pretrained_load(small_net, saved_net):
    # as timm does: a one-channel model sums the first conv over RGB, so it equals the RGB model on a grey image
    grey = torch.randn(2, 1, 64, 32)
    for width in (None, 0.25):
        one = timm.create_model(f'local-dir:{saved_net}', pretrained=True, in_chans=1, width=width).eval()
        assert one.in_chans == 1
        with torch.no_grad():
            if width is None:
                with one.width(0.5), small_net.width(0.5):
                    torch.testing.assert_close(one(grey), small_net(grey.expand(-1, 3, -1, -1)), rtol=1e-4,
                                               atol=1e-5)
            else:
                rgb = sfsc_timm.extract(small_net, width).eval()
                torch.testing.assert_close(one(grey), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    five = timm.create_model(f'local-dir:{saved_net}', pretrained=True, in_chans=5, width=0.5)
    assert five.backbone.conv1.weight.shape[1] == 5


def test_load_checkpoint_of_one_width_from_the_supernet_file(small_net, saved_net):
    x = _x()
    for width in small_net.widths:
        sub = timm.create_model('sfsc_resnet18', width=width, widths=small_net.widths, embed_dim=96, num_classes=7)
        load_checkpoint(sub, str(saved_net / 'model.safetensors'))  # strict: every key of this width, no other
        expected = sfsc_timm.extract(small_net, width)
        with torch.no_grad():
            assert torch.equal(sub.eval()(x), expected.eval()(x)), width
    sub = timm.create_model('sfsc_resnet18', width=0.5, widths=small_net.widths, embed_dim=96, num_classes=7,
                            checkpoint_path=str(saved_net / 'model.safetensors'))  # create_model's own argument
    with torch.no_grad():
        assert torch.equal(sub.eval()(x), sfsc_timm.extract(small_net, 0.5).eval()(x))
    wrong = timm.create_model('sfsc_resnet18', width=0.5, widths=small_net.widths, embed_dim=64, num_classes=7)
    with pytest.raises(RuntimeError, match='size mismatch for neck.fc.weight'):
        load_checkpoint(wrong, str(saved_net / 'model.safetensors'))  # another D is refused, never sliced
