import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

import timm.loss
from sfsc_timm.losses import (
    BatchHardTripletLoss, LabelSmoothingCrossEntropy, UncertaintyCompatibleLoss, dirichlet_expected_ce,
    dirichlet_uncertainty, embedding_regression, evidence_to_alpha, kl_dirichlet_to_uniform, remove_target_evidence,
    width_priorities,
)


def test_expected_ce_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    alpha = 0.5 + 4.5 * torch.rand(4, 5, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 3, 2, 4])
    torch.manual_seed(0)
    p = Dirichlet(alpha).sample((200_000,))  # (N, B, C)
    nll = -p.gather(-1, target.expand(p.shape[0], -1).unsqueeze(-1)).squeeze(-1).log()
    mc_mean, mc_se = nll.mean(0), nll.std(0) / math.sqrt(p.shape[0])
    closed = dirichlet_expected_ce(alpha, target)
    assert closed.shape == (4,)
    assert torch.all((closed - mc_mean).abs() < 4 * mc_se), (closed, mc_mean, mc_se)


def test_expected_ce_probability_targets_match_indices():
    alpha = 1 + torch.rand(3, 6, dtype=torch.float64) * 3
    target = torch.tensor([1, 5, 0])
    one_hot = F.one_hot(target, 6).double()
    torch.testing.assert_close(dirichlet_expected_ce(alpha, one_hot), dirichlet_expected_ce(alpha, target))


def test_kl_matches_torch_distributions():
    alpha = 0.3 + 5 * torch.rand(6, 7, dtype=torch.float64)
    expected = kl_divergence(Dirichlet(alpha), Dirichlet(torch.ones_like(alpha)))
    torch.testing.assert_close(kl_dirichlet_to_uniform(alpha), expected)
    # the uniform Dirichlet is at distance zero from itself
    torch.testing.assert_close(kl_dirichlet_to_uniform(torch.ones(2, 7)), torch.zeros(2), atol=1e-6, rtol=0)


def test_alpha_uncertainty_and_target_evidence():
    logits = torch.tensor([[-50., 0., 3.], [-50., -50., -50.]])
    alpha = evidence_to_alpha(logits)
    torch.testing.assert_close(alpha, F.softplus(logits) + 1)
    u = dirichlet_uncertainty(alpha)
    torch.testing.assert_close(u, 3 / alpha.sum(1))
    assert u[1] == pytest.approx(1.0)  # no evidence at all: maximal uncertainty
    alpha_tilde = remove_target_evidence(alpha, torch.tensor([2, 0]))
    assert alpha_tilde[0, 2] == 1 and alpha_tilde[1, 0] == 1
    torch.testing.assert_close(alpha_tilde[0, :2], alpha[0, :2])


def test_uncertainty_compatible_loss_annealing():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, requires_grad=True)
    target = torch.randint(0, 5, (8,))
    alpha = F.softplus(logits.detach()) + 1
    ce = dirichlet_expected_ce(alpha, target).mean()
    kl = kl_dirichlet_to_uniform(remove_target_evidence(alpha, target)).mean()
    crit = UncertaintyCompatibleLoss(kl_coef=0.5, kl_anneal_epochs=10)
    for epoch, weight in ((0, 0.), (5, 0.25), (10, 0.5), (30, 0.5)):
        out = crit(logits, target, epoch)
        torch.testing.assert_close(out.loss.detach(), ce + weight * kl)
    torch.testing.assert_close(out.uncertainty, dirichlet_uncertainty(alpha).mean())
    assert not out.uncertainty.requires_grad
    out.loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # no annealing: full weight from the first epoch
    assert UncertaintyCompatibleLoss(kl_coef=0.5, kl_anneal_epochs=0).kl_weight(0) == 0.5


def test_exp_evidence_gives_a_softmax_like_gradient_whatever_the_number_of_classes():
    # d/dz_c [digamma(S) - digamma(alpha_y)] = trigamma(S) e^z_c - [c = y] trigamma(alpha_y) e^z_y: close to softmax
    # CE's p_c - y_c once evidence is large; softplus evidence instead needs the target logit to grow to about C
    torch.manual_seed(0)
    for num_classes in (10, 700):
        logits = torch.randn(16, num_classes, dtype=torch.float64)
        logits[torch.arange(16), torch.arange(16) % num_classes] += 12.  # confident, correct
        target = torch.arange(16) % num_classes
        z = logits.clone().requires_grad_(True)
        dirichlet_expected_ce(evidence_to_alpha(z, 'exp'), target).sum().backward()
        alpha = logits.exp() + 1
        closed = torch.polygamma(1, alpha.sum(1, keepdim=True)) * logits.exp()
        closed[torch.arange(16), target] -= (torch.polygamma(1, alpha) * logits.exp())[torch.arange(16), target]
        torch.testing.assert_close(z.grad, closed)
        # it differs from softmax CE's by about the share of the C prior pseudo-counts in S, whatever C is
        softmax_grad = F.softmax(logits, 1) - F.one_hot(target, num_classes)
        prior_share = num_classes / alpha.sum(1, keepdim=True)
        assert ((z.grad - softmax_grad).abs() <= prior_share).all() and prior_share.max() < 0.02
    # the softplus gradient on the same confident logits is far from softmax CE's with many classes: the target
    # still gets a push of about -1/alpha_y, and the target probability alpha_y / S is far below softmax's
    alpha = evidence_to_alpha(logits, 'softplus')
    assert (alpha.gather(1, target[:, None]) / alpha.sum(1, keepdim=True)).max() < 0.05
    with pytest.raises(ValueError, match='softplus, exp'):
        evidence_to_alpha(logits, 'relu')


def test_uncertainty_loss_takes_the_evidence_function():
    logits, target = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    out = UncertaintyCompatibleLoss(kl_coef=0., evidence='exp')(logits, target, epoch=0)
    torch.testing.assert_close(out.loss, dirichlet_expected_ce(logits.exp() + 1, target).mean())
    torch.testing.assert_close(out.uncertainty, (6 / (logits.exp() + 1).sum(1)).mean())
    with pytest.raises(ValueError, match='unknown evidence'):
        UncertaintyCompatibleLoss(evidence='relu')


def test_embedding_regression_is_one_minus_cosine():
    student, teacher = torch.randn(5, 8), torch.randn(5, 8)
    expected = (1 - F.cosine_similarity(student, teacher)).mean()
    torch.testing.assert_close(embedding_regression(student, teacher), expected)
    assert embedding_regression(teacher * 3, teacher).abs() < 1e-6  # scale does not matter, direction does


def test_uncertainty_loss_half_precision_logits():
    logits = torch.randn(4, 3).half()
    out = UncertaintyCompatibleLoss()(logits, torch.tensor([0, 1, 2, 0]), epoch=3)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_width_priorities():
    u = [torch.tensor(0.8), torch.tensor(0.4), torch.tensor(0.2), torch.tensor(0.2)]
    pi = width_priorities(u)
    assert pi.sum().item() == pytest.approx(4.0)
    torch.testing.assert_close(pi, torch.tensor([2.0, 1.0, 0.5, 0.5]))  # 4 * u / 1.6
    assert pi[0] > pi[1] > pi[2]
    torch.testing.assert_close(width_priorities(torch.tensor([0.8, 0.4, 0.2]), mode='uniform'), torch.ones(3))
    # relative: the SFSC paper's ratios, with the first (widest) width's weight held at 1
    widest_first = torch.tensor([0.2, 0.3, 0.4, 0.5])
    relative = width_priorities(widest_first, mode='relative')
    torch.testing.assert_close(relative, torch.tensor([1.0, 1.5, 2.0, 2.5]))
    torch.testing.assert_close(relative / relative.sum(), width_priorities(widest_first) / 4)
    # ... bounded by m, the normalised form's largest weight: a confident widest width (u_0 near 0) cannot multiply a
    # narrow width's loss by hundreds, and 0 / 0 is a tie
    confident_widest = width_priorities(torch.tensor([2e-5, 6e-3, 3e-5, 4e-5]), mode='relative')
    torch.testing.assert_close(confident_widest, torch.tensor([1.0, 4.0, 1.5, 2.0]))
    torch.testing.assert_close(width_priorities(torch.zeros(3), mode='relative'), torch.ones(3))
    grad_u = torch.tensor([0.3, 0.6], requires_grad=True)
    assert not width_priorities(grad_u).requires_grad
    with pytest.raises(ValueError):
        width_priorities(u, mode='nope')


def test_batch_hard_triplet_hand_case():
    # points on a line at 0, 1, 3, 5 with labels 0, 0, 1, 1 -> distances
    # d01=1 d02=3 d03=5 d12=2 d13=4 d23=2
    # anchor 0: hardest pos 1, hardest neg min(3, 5)=3 -> relu(1 - 3 + 1.5) = 0
    # anchor 1: pos 1, neg min(2, 4)=2 -> relu(1 - 2 + 1.5) = 0.5
    # anchor 2: pos 2, neg min(3, 2)=2 -> relu(2 - 2 + 1.5) = 1.5
    # anchor 3: pos 2, neg min(5, 4)=4 -> relu(2 - 4 + 1.5) = 0
    # mean = 2 / 4 = 0.5
    x = torch.tensor([[0., 0.], [1., 0.], [3., 0.], [5., 0.]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = BatchHardTripletLoss(margin=1.5)(x, labels)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # soft margin: mean of softplus(d_ap - d_an) = softplus(-2), softplus(-1), softplus(0), softplus(-2)
    soft = BatchHardTripletLoss(soft_margin=True)(x, labels)
    expected = (2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 4
    assert soft.item() == pytest.approx(expected, abs=1e-6)


def test_batch_hard_triplet_excludes_anchors_without_pairs():
    x = torch.tensor([[0., 0.], [1., 0.], [3., 0.], [5., 0.]])
    # anchors 2 and 3 have no positive: only anchors 0 (loss 0) and 1 (loss 0.5) count
    assert BatchHardTripletLoss(margin=1.5)(x, torch.tensor([0, 0, 1, 2])).item() == pytest.approx(0.25, abs=1e-6)
    # one label only: no negatives anywhere -> zero, still differentiable
    xg = x.clone().requires_grad_()
    loss = BatchHardTripletLoss()(xg, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(xg.grad, torch.zeros_like(xg))


def test_batch_hard_triplet_normalize_and_duplicates():
    # (0, 2) and (0, 1) normalise to the same point: positive distance 0; negative (1, 0) at sqrt(2)
    x = torch.tensor([[0., 2.], [0., 1.], [1., 0.], [3., 0.]], requires_grad=True)
    loss = BatchHardTripletLoss(margin=2.0, normalize=True)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(2.0 - math.sqrt(2), abs=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_label_smoothing_is_timms():
    assert LabelSmoothingCrossEntropy is timm.loss.LabelSmoothingCrossEntropy
