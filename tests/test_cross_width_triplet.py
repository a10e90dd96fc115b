""" The cross-width triplet (``lambda_cross_tri``): the loss, its keys, and the steps that train with it. """
import pytest
import torch
import torch.nn.functional as F

from sfsc_timm.losses import cross_batch_hard_triplet
from sfsc_timm.train import ConfigError, config_from_dict
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.methods import create_train_step
from sfsc_timm.train.params import private_params_by_width, width_gradient_supports
from sfsc_timm.train.trainer import create_model

from test_reid_options import _by_hand, _config, _settle_norm_stats, _smoothed_ce
from test_train import tiny_batch


def _hand_cross_triplet(anchors: torch.Tensor, candidates: torch.Tensor, labels, margin: float = 0.3) -> float:
    """Loops over anchors: the farthest same-label candidate (its own image included), the closest other one."""
    a = F.normalize(anchors.double(), dim=1)
    c = F.normalize(candidates.double(), dim=1)
    losses = []
    for i in range(len(labels)):
        d = [float((a[i] - c[j]).norm()) for j in range(len(labels))]
        positives = [d[j] for j in range(len(labels)) if labels[j] == labels[i]]
        negatives = [d[j] for j in range(len(labels)) if labels[j] != labels[i]]
        if negatives:
            losses.append(max(0.0, max(positives) - min(negatives) + margin))
    return sum(losses) / len(losses)


def test_the_loss_ranks_the_other_widths_batch_for_each_anchor():
    gen = torch.Generator().manual_seed(0)
    anchors, candidates = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 4])  # 3 and 4 appear once: the own image is their only positive
    for margin in (0.3, 1.0):
        assert float(cross_batch_hard_triplet(anchors, candidates, labels, margin)) == pytest.approx(
            _hand_cross_triplet(anchors, candidates, labels, margin), abs=1e-5)
    # ranks by cosine: the norms do not matter
    scaled = cross_batch_hard_triplet(anchors * 3.0, candidates * (torch.rand(7, 1, generator=gen) + 0.1), labels)
    assert float(scaled) == pytest.approx(float(cross_batch_hard_triplet(anchors, candidates, labels)), abs=1e-5)
    # the other width's gallery already in order, by more than the margin: nothing to learn
    well_separated = torch.eye(5)[labels] * 10
    assert float(cross_batch_hard_triplet(well_separated, well_separated + 0.01, labels)) == 0.0


def test_the_loss_trains_only_what_is_not_detached_and_a_single_label_batch_gives_a_connected_zero():
    gen = torch.Generator().manual_seed(1)
    anchors = torch.randn(6, 4, generator=gen, requires_grad=True)
    candidates = torch.randn(6, 4, generator=gen, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    cross_batch_hard_triplet(anchors, candidates.detach(), labels, margin=2.0).backward()
    assert anchors.grad.abs().sum() > 0 and candidates.grad is None
    loss = cross_batch_hard_triplet(anchors, candidates, torch.zeros(6, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(candidates.grad, torch.zeros_like(candidates))
    with pytest.raises(ValueError, match=r'anchors \(6, 4\) and candidates \(5, 4\) must be embeddings of the same '
                                         'batch'):
        cross_batch_hard_triplet(anchors, candidates[:5], labels)


def test_cross_width_triplet_options_are_checked():
    cfg = config_from_dict(dict())
    assert cfg.options.lambda_cross_tri == 0.0 and cfg.options.cross_tri_direction == 'to_widest'
    mutual = config_from_dict(dict(method='bct_s', lambda_cross_tri=1, cross_tri_direction='mutual'))
    assert mutual.options.lambda_cross_tri == 1 and mutual.options.cross_tri_direction == 'mutual'
    with pytest.raises(ConfigError, match='lambda_cross_tri is not an option of method independent.*one of sfsc, '
                                          'sfsc_ce_ens, bct_s, asymmetric_s'):
        config_from_dict(dict(method='independent', lambda_cross_tri=1))
    with pytest.raises(ConfigError, match="cross_tri_direction='mutual' has no effect: there is no cross-width "
                                          'triplet'):
        config_from_dict(dict(cross_tri_direction='mutual'))
    with pytest.raises(ConfigError, match="cross_tri_direction='both'; allowed: to_widest, mutual"):
        config_from_dict(dict(lambda_cross_tri=1, cross_tri_direction='both'))
    with pytest.raises(ConfigError, match='option lambda_cross_tri must be a finite number >= 0'):
        config_from_dict(dict(lambda_cross_tri=-1))


@pytest.mark.parametrize('direction', ['to_widest', 'mutual'])
def test_bct_s_adds_the_cross_width_triplet_of_each_width_to_its_cross_entropy(direction):
    cfg = _config('bct_s', lambda_cross_tri=0.5, cross_tri_direction=direction, triplet_margin=0.4)
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5)
    _settle_norm_stats(net)
    step = create_train_step(cfg, net, DistInfo())
    images, labels = tiny_batch()
    widths = (1.0, 0.5, 0.25)
    by_hand = {w: _by_hand(net, w, images) for w in widths}
    expected = []
    for w in widths:
        _, embedding, logits = by_hand[w]
        ce = float(_smoothed_ce(logits.double(), labels, 0.0))
        if direction == 'to_widest':
            cross = 0.0 if w == 1.0 else _hand_cross_triplet(embedding, by_hand[1.0][1], labels, 0.4)
        else:  # both halves of every pair this width is in, averaged over the other widths
            others = [by_hand[o][1] for o in widths if o != w]
            cross = sum(_hand_cross_triplet(embedding, other, labels, 0.4) + _hand_cross_triplet(other, embedding,
                                                                                                 labels, 0.4)
                        for other in others) / len(others)
        assert w == 1.0 and direction == 'to_widest' or cross > 0.01  # the term is there to be seen
        expected.append(ce + 0.5 * cross)
    assert step(images, labels, epoch=0.0).width_losses == pytest.approx(expected, abs=1e-4)


def _terms_and_gradients(direction: str):
    cfg = _config('sfsc_ce_ens', lambda_cross_tri=1.0, cross_tri_direction=direction, triplet_margin=1.0)
    torch.manual_seed(0)
    net = create_model(cfg, num_classes=5)
    step = create_train_step(cfg, net, DistInfo())
    images, labels = tiny_batch()
    outs = [step.forward_width(w, images) for w in step.widths]
    terms = step.cross_width_triplets(outs, labels)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = [None if term is None else torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
             for term in terms]
    return net, step, params, outs, labels, terms, grads


@pytest.mark.parametrize('direction', ['to_widest', 'mutual'])
def test_each_widths_term_trains_only_its_own_sub_network(direction):
    # what the sfsc methods' projection promises itself: a width's gradient is zero outside its leading blocks and
    # on the other widths' private BatchNorm parameters
    net, step, params, _, _, terms, grads = _terms_and_gradients(direction)
    assert (terms[0] is None) == (direction == 'to_widest')
    supports = width_gradient_supports(net, step.widths)
    private = {id(p): w for w, ps in private_params_by_width(net).items() for p in ps}
    sliced = 0  # parameters of which this width uses a strict part: where the promise says something
    for task, (width, task_grads) in enumerate(zip(step.widths, grads)):
        if task_grads is None:
            continue
        assert sum(float(g.abs().sum()) for g in task_grads if g is not None) > 0
        for p, g in zip(params, task_grads):
            if g is None:
                continue
            if id(p) in private and private[id(p)] != width:
                assert torch.equal(g, torch.zeros_like(g))
                continue
            outside = g.clone()
            outside[supports[p][task]] = 0
            assert torch.equal(outside, torch.zeros_like(g)), (width, p.shape)
            sliced += g[supports[p][task]].numel() < g.numel()
    assert sliced > 0


def test_mutual_terms_sum_to_the_gradient_of_the_loss_over_all_ordered_pairs_of_widths():
    _, _, params, outs, labels, terms, grads = _terms_and_gradients('mutual')
    pairs = [cross_batch_hard_triplet(a.embedding, c.embedding, labels, margin=1.0)
             for i, a in enumerate(outs) for j, c in enumerate(outs) if i != j]
    objective = torch.stack(pairs).sum() / (len(outs) - 1)
    expected = torch.autograd.grad(objective, params, allow_unused=True)
    for k, target in enumerate(expected):
        total = [g[k] for g in grads if g[k] is not None]
        if target is None:
            assert not total
            continue
        torch.testing.assert_close(torch.stack(total).sum(0), target, atol=1e-6, rtol=1e-4)
