""" The cosine classifier (``classifier: cosine``): its logits, its keys, and every method's step reading it. """
import pytest
import torch
import torch.nn.functional as F

from sfsc_timm.losses import DEFAULT_COSINE_SCALE, cosine_logits
from sfsc_timm.train import ConfigError, config_from_dict
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import METHODS, create_train_step
from sfsc_timm.train.trainer import create_model

from test_reid_options import _by_hand, _config, _model_at, _settle_norm_stats, _smoothed_ce
from test_train import tiny_batch


def test_cosine_logits_are_the_scaled_cosine_whatever_the_norms():
    gen = torch.Generator().manual_seed(0)
    embedding, weight = torch.randn(4, 6, generator=gen), torch.randn(3, 6, generator=gen)
    expected = torch.tensor([[7.5 * float(e.double() @ w.double() / (e.double().norm() * w.double().norm()))
                              for w in weight] for e in embedding])
    torch.testing.assert_close(cosine_logits(embedding, weight, 7.5).double(), expected.double(), atol=1e-5, rtol=0)
    # retrieval ranks by cosine: rescaling an embedding or a class's weight row changes no logit
    row_scales, class_scales = torch.tensor([[0.1], [3.], [10.], [1.]]), torch.tensor([[5.], [.2], [1.]])
    rescaled = cosine_logits(embedding * row_scales, weight * class_scales)
    torch.testing.assert_close(rescaled, cosine_logits(embedding, weight), atol=1e-5, rtol=0)
    assert float(cosine_logits(embedding, weight).abs().max()) <= DEFAULT_COSINE_SCALE + 1e-5
    with pytest.raises(ValueError, match="embedding dimension 6 does not match the classifier's 5"):
        cosine_logits(embedding, torch.randn(3, 5))


def test_classifier_keys_are_checked():
    assert config_from_dict(dict()).classifier == 'linear' and config_from_dict(dict()).classifier_scale is None
    cfg = config_from_dict(dict(method='bct_s', classifier='cosine'))
    assert cfg.classifier_scale == DEFAULT_COSINE_SCALE == 20.0  # Zhai & Wu 2019's temperature 0.05
    assert config_from_dict(dict(classifier='cosine', classifier_scale=30)).classifier_scale == 30
    with pytest.raises(ConfigError, match="classifier='arcface'; allowed: linear, cosine"):
        config_from_dict(dict(classifier='arcface'))
    with pytest.raises(ConfigError, match="classifier_scale=16 has no effect: .* classifier is 'linear'; set "
                                          "classifier: cosine"):
        config_from_dict(dict(classifier_scale=16))
    with pytest.raises(ConfigError, match='classifier_scale must be a finite number > 0'):
        config_from_dict(dict(classifier='cosine', classifier_scale=0))


@pytest.mark.parametrize('method', ['bct_s', 'independent'])
def test_the_step_classifies_by_the_scaled_cosine_to_the_heads_weight_rows(method):
    cfg = _config(method, classifier='cosine', classifier_scale=8.0)
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5)
    _settle_norm_stats(net)
    step = create_train_step(cfg, net, DistInfo())
    images, labels = tiny_batch()
    expected = []
    for width in (1.0, 0.5, 0.25):
        _, embedding, linear = _by_hand(net, width, images)
        weight = _model_at(net, width).head.weight.detach().double()
        logits = 8.0 * F.normalize(embedding.double(), dim=1) @ F.normalize(weight, dim=1).t()
        assert not torch.allclose(logits.float(), linear, atol=1e-3)  # the linear head would give other logits
        expected.append(float(_smoothed_ce(logits, labels, 0.0)))
    assert step(images, labels, epoch=0.0).width_losses == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_every_method_trains_the_cosine_classifiers_weight_and_leaves_its_bias(method):
    cfg = _config(method, classifier='cosine')
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5)
    step = create_train_step(cfg, net, DistInfo())
    heads = {id(_model_at(net, w).head): _model_at(net, w).head for w in net.widths}.values()
    before = [(head.weight.detach().clone(), head.bias.detach().clone()) for head in heads]
    images, labels = tiny_batch()
    epochs = cfg.epochs * getattr(step, 'num_stages', 1)
    for epoch in (0.0, float(epochs) - 0.5):  # the staged baselines train their later widths in the second stage
        result = step(images, labels, epoch=epoch)
        assert not result.skipped
    moved = [not torch.equal(head.weight, weight) for head, (weight, _) in zip(heads, before)]
    assert any(moved)
    for head, (_, bias) in zip(heads, before):  # the cosine classifier has no bias: it stays at its zeros
        assert torch.equal(head.bias, bias)


def test_bcts_influence_loss_goes_through_the_frozen_full_width_classifier_as_a_cosine_too():
    cfg = _config('bct', classifier='cosine', classifier_scale=8.0)
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5)
    _settle_norm_stats(net)
    step = create_train_step(cfg, net, DistInfo())
    images, labels = tiny_batch()
    _, embedding, _ = _by_hand(net, 0.25, images)

    def cosine(head):
        return 8.0 * F.normalize(embedding.double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).t()

    expected = _smoothed_ce(cosine(net.member(0.25).head), labels, 0.0) + _smoothed_ce(cosine(net.member(1.0).head),
                                                                                      labels, 0.0)
    full_head = net.member(1.0).head.weight.detach().clone()
    result = step(images, labels, epoch=1.0)  # the second stage: the narrow models against the frozen full one
    assert result.width_losses[2] == pytest.approx(float(expected), abs=1e-5)
    assert torch.equal(net.member(1.0).head.weight, full_head)
