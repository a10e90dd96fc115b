import io

import pytest
import torch
import torch.nn as nn

from sfsc_timm.optim import (
    GradientCombination, GradientProjection, PCGrad, Sum, count_layer_conflicts, gram_matrix, project_conflicting,
)


def naive_pcgrad(grads: torch.Tensor, generator: torch.Generator) -> tuple:
    """Reference PCGrad with explicit vector ops: same per-task randperm draws as project_conflicting."""
    m = grads.shape[0]
    projected, conflicts = [], 0
    for i in range(m):
        g_i = grads[i].clone()
        for j in torch.randperm(m, generator=generator).tolist():
            g_j = grads[j]
            if j == i or torch.dot(g_j, g_j) == 0:
                continue
            dot = torch.dot(g_i, g_j)
            if dot < 0:
                g_i = g_i - dot / torch.dot(g_j, g_j) * g_j
                conflicts += 1
        projected.append(g_i)
    return torch.stack(projected).sum(0), conflicts


def test_two_conflicting_gradients():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1 < 0
    # g1' = g1 - (-1 / |g2|^2 = 2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5)
    # g2' = g2 - (-1 / |g1|^2 = 1) g1 = (-1, 1) + (1, 0)    = (0, 1)
    # sum = (0.5, 1.5), two projections
    grads = torch.tensor([[1., 0.], [-1., 1.]])
    update, stats = project_conflicting(grads, torch.Generator().manual_seed(0), return_stats=True)
    torch.testing.assert_close(update, torch.tensor([0.5, 1.5]))
    assert stats.num_conflicts == 2
    torch.testing.assert_close(stats.weights, torch.tensor([2.0, 1.5], dtype=torch.float64))  # 0.5+1.5 = 2*g1+1.5*g2


def test_non_conflicting_gradients_are_summed():
    # (1, 0).(1, 1) = 1 >= 0: nothing projected, update = (2, 1)
    grads = torch.tensor([[1., 0.], [1., 1.]])
    update, stats = project_conflicting(grads, return_stats=True)
    torch.testing.assert_close(update, torch.tensor([2., 1.]))
    assert stats.num_conflicts == 0


def _seed_with_order(g3_first: bool) -> int:
    """A seed whose first two draws put task 3 (index 2) before (g3_first) or after the remaining other task."""
    for seed in range(1000):
        gen = torch.Generator().manual_seed(seed)
        p0, p1 = (torch.randperm(3, generator=gen).tolist() for _ in range(2))
        if (p0.index(2) < p0.index(1)) == g3_first and (p1.index(2) < p1.index(0)) == g3_first:
            return seed
    raise AssertionError('no seed found')


@pytest.mark.parametrize('g3_first', [True, False])
def test_three_gradients_order_matters(g3_first):
    # g1 = (1, 0, 0), g2 = (0, 1, 0), g3 = (-1, -1, 1); g1.g2 = 0, g1.g3 = g2.g3 = -1, |g3|^2 = 3
    # task 1, g3 first: g1 + g3/3 = (2/3, -1/3, 1/3); now . g2 = -1/3 < 0 -> + g2/3 = (2/3, 0, 1/3)  [2 projections]
    # task 1, g2 first: g1.g2 = 0 (no-op), then g3                    -> (2/3, -1/3, 1/3)          [1 projection]
    # task 2 mirrors task 1:                         (0, 2/3, 1/3) [2]  or  (-1/3, 2/3, 1/3) [1]
    # task 3, either order: g3 + g1 = (0, -1, 1), then + g2 = (0, 0, 1)                            [2 projections]
    grads = torch.tensor([[1., 0., 0.], [0., 1., 0.], [-1., -1., 1.]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(_seed_with_order(g3_first))
    update, stats = project_conflicting(grads, gen, return_stats=True)
    if g3_first:
        expected, conflicts = [2 / 3, 2 / 3, 5 / 3], 6  # (2/3,0,1/3) + (0,2/3,1/3) + (0,0,1)
    else:
        expected, conflicts = [1 / 3, 1 / 3, 5 / 3], 4  # (2/3,-1/3,1/3) + (-1/3,2/3,1/3) + (0,0,1)
    torch.testing.assert_close(update, torch.tensor(expected, dtype=torch.float64))
    assert stats.num_conflicts == conflicts


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_naive_pcgrad(seed):
    torch.manual_seed(seed)
    # a shared direction with random signs makes conflicts frequent, noise keeps the gradients generic
    base = torch.randn(1000, dtype=torch.float64)
    grads = torch.tensor([1., -0.7, 0.4, -1.2], dtype=torch.float64)[:, None] * base + torch.randn(4, 1000).double()
    update, stats = project_conflicting(grads, torch.Generator().manual_seed(123), return_stats=True)
    expected, conflicts = naive_pcgrad(grads, torch.Generator().manual_seed(123))
    torch.testing.assert_close(update, expected, rtol=1e-10, atol=1e-10)
    assert stats.num_conflicts == conflicts > 0
    # float32 inputs agree within float32 precision
    update32 = project_conflicting(grads.float(), torch.Generator().manual_seed(123))
    torch.testing.assert_close(update32, expected.float(), rtol=1e-4, atol=1e-4)


def test_gram_matrix_pairwise_path():
    # the accelerator path (plain dot products) must agree with the matmul used on the CPU
    grads = torch.randn(4, 300, dtype=torch.float64)
    torch.testing.assert_close(gram_matrix(grads, pairwise=True), grads @ grads.t())


def test_zero_gradient_is_skipped_and_single_task():
    grads = torch.tensor([[1., 0.], [0., 0.], [-1., 1.]])
    update = project_conflicting(grads, torch.Generator().manual_seed(0))
    assert torch.isfinite(update).all()
    torch.testing.assert_close(update, torch.tensor([0.5, 1.5]))  # as the two-task case, the zero row adds nothing
    torch.testing.assert_close(project_conflicting(grads[:1]), grads[0])
    with pytest.raises(ValueError):
        project_conflicting(grads[0])


class TwoTaskModel(nn.Module):
    """w is shared by both tasks; q is private (not projected); u is shared but unused."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1., 1.]))
        self.q = nn.Parameter(torch.tensor([0.]))
        self.u = nn.Parameter(torch.tensor([0.]))

    def losses(self, scale: float = 1.):
        # L1 = (w.(1,0) - 2)^2 / 2 + 2q -> dL1/dw = (w1 - 2)(1, 0) = (-1, 0)
        # L2 = (w.(1,1))^2 / 2 + 5q     -> dL2/dw = (w1 + w2)(1, 1) = (2, 2)
        w = self.w
        return [scale * ((w[0] - 2) ** 2 / 2 + 2 * self.q.sum()), scale * ((w.sum()) ** 2 / 2 + 5 * self.q.sum())]


def _one_step(model, opt, scale=1., **step_kwargs):
    opt.zero_grad()
    for i, loss in enumerate(model.losses(scale)):
        loss.backward()
        opt.collect(i)
    return opt.step(**step_kwargs)


@pytest.mark.parametrize('layout', ['blocks', 'flat'])
def test_step_matches_hand_computed_update(layout):
    # g1 = (-1, 0), g2 = (2, 2), g1.g2 = -2 < 0
    # g1' = g1 - (-2 / 8) g2 = (-1, 0) + (0.5, 0.5) = (-0.5, 0.5)
    # g2' = g2 - (-2 / 1) g1 = (2, 2) + 2 (-1, 0)  = (0, 2)
    # update = (-0.5, 2.5); SGD lr 0.1: w = (1, 1) - 0.1 (-0.5, 2.5) = (1.05, 0.75)
    # private q: grad 2 + 5 = 7 accumulated over both backward passes, q = 0 - 0.1 * 7 = -0.7
    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w, model.u], num_tasks=2,
                             layout=layout)
    _one_step(model, opt)
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.05, 0.75]))
    torch.testing.assert_close(model.w.grad, torch.tensor([-0.5, 2.5]))
    torch.testing.assert_close(model.q.detach(), torch.tensor([-0.7]))
    torch.testing.assert_close(model.q.grad, torch.tensor([7.]))
    assert model.u.grad is None and model.u.item() == 0  # no task reached it: the inner optimizer skipped it
    assert opt.last_num_conflicts == 2 and opt.num_conflicts_total == 2 and opt.num_steps == 1


def test_sum_mode_and_accumulation():
    # sum mode: update = (-1, 0) + (2, 2) = (1, 2); w = (1, 1) - 0.1 (1, 2) = (0.9, 0.8)
    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w], 2, projection_mode='sum')
    _one_step(model, opt)
    torch.testing.assert_close(model.w.detach(), torch.tensor([0.9, 0.8]))
    assert opt.last_num_conflicts == 0
    # collecting twice into one row accumulates (two micro-batches of the same task)
    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w], 2, projection_mode='sum')
    opt.zero_grad()
    for _ in range(2):
        for i, loss in enumerate(model.losses(0.5)):
            loss.backward()
            opt.collect(i)
    opt.step()
    torch.testing.assert_close(model.w.detach(), torch.tensor([0.9, 0.8]))


@pytest.mark.parametrize('layout', ['blocks', 'flat'])
def test_amp_grad_scaler_matches_fp32_and_skips_non_finite(layout):
    reference = TwoTaskModel()
    ref_opt = GradientProjection(torch.optim.SGD(reference.parameters(), lr=0.1), [reference.w], 2)
    _one_step(reference, ref_opt)

    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w], 2, layout=layout)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    opt.zero_grad()
    for i, loss in enumerate(model.losses()):
        scaler.scale(loss).backward()
        opt.collect(i)
    opt.step(grad_scaler=scaler)
    scaler.update()
    for name in ('w', 'q'):
        torch.testing.assert_close(getattr(model, name), getattr(reference, name), rtol=0, atol=0)
    assert scaler.get_scale() == 2.**10 and opt.last_num_conflicts == 2

    # an infinite loss: the scaler skips the step and backs off, nothing is projected
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    for i, loss in enumerate(model.losses()):
        scaler.scale(loss * (float('inf') if i == 1 else 1.)).backward()
        opt.collect(i)
    assert opt.step(grad_scaler=scaler) is None
    scaler.update()
    assert scaler.get_scale() == 2.**9 and opt.last_num_conflicts == 0
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)


def test_clip_grad():
    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=1.), [model.w], 2)
    _one_step(model, opt, clip_grad=0.1)
    total_norm = torch.cat([model.w.grad, model.q.grad]).norm()
    assert total_norm.item() == pytest.approx(0.1, rel=1e-4)


def test_channels_last_param_keeps_layout():
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    opt = GradientProjection(torch.optim.SGD(conv.parameters(), lr=0.1), [conv.weight], 2, projection_mode='sum')
    x = torch.randn(2, 3, 5, 5)
    expected = torch.zeros_like(conv.weight)
    opt.zero_grad()
    for i in range(2):
        loss = conv(x * (i + 1)).square().mean()
        expected += torch.autograd.grad(loss, conv.weight, retain_graph=True)[0]
        loss.backward()
        opt.collect(i)
    opt.step()
    torch.testing.assert_close(conv.weight.grad, expected)
    assert conv.weight.grad.stride() == conv.weight.stride()


def _order_sensitive_run(opt_state=None, seed=0, steps=5):
    """Linear losses L_i = w . g_i with the order-dependent gradients of test_three_gradients_order_matters."""
    grads = torch.tensor([[1., 0., 0.], [0., 1., 0.], [-1., -1., 1.]], dtype=torch.float64)
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = GradientProjection(torch.optim.SGD([w], lr=1.), [w], 3, generator=torch.Generator().manual_seed(seed))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        for i in range(3):
            (w * grads[i]).sum().backward()
            opt.collect(i)
        opt.step()
        trajectory.append(w.grad.clone())  # the projected update of this step
    return torch.stack(trajectory), opt


def test_state_dict_round_trip_reproduces_orders():
    _, opt = _order_sensitive_run(seed=7, steps=3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert {'state', 'param_groups', 'gradient_projection'} <= set(state)
    continued, _ = _order_sensitive_run(seed=7, steps=8)
    resumed, resumed_opt = _order_sensitive_run(opt_state=state, seed=99)
    # resumed after 3 steps, the next 5 updates are those of the uninterrupted run
    assert torch.equal(resumed, continued[3:])
    assert resumed_opt.num_steps == 8
    other, _ = _order_sensitive_run(seed=99)
    assert not torch.equal(other, resumed)  # the orders do matter: another seed takes another path
    # a plain inner optimizer state dict loads too
    plain_state = torch.optim.SGD([nn.Parameter(torch.zeros(3))], lr=1.).state_dict()
    resumed_opt.load_state_dict(plain_state)


def test_schedulers_and_errors():
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    model = TwoTaskModel()
    inner = create_optimizer_v2(model, 'adamw', lr=0.01, weight_decay=0.05)
    opt = GradientProjection(inner, [model.w], 2)
    # composed around the optimizer, not an Optimizer itself: timm schedulers share its param_groups, torch
    # schedulers take the optimizer
    assert not isinstance(opt, torch.optim.Optimizer) and opt.optimizer is inner
    assert opt.param_groups is inner.param_groups
    sched = CosineLRScheduler(opt, t_initial=10, warmup_t=0)
    _one_step(model, opt)
    sched.step(5)
    assert inner.param_groups[0]['lr'] < 0.01
    torch_sched = torch.optim.lr_scheduler.StepLR(opt.optimizer, step_size=1, gamma=0.5)
    _one_step(model, opt)
    torch_sched.step()
    assert opt.state_dict()['param_groups'][0]['lr'] == pytest.approx(inner.param_groups[0]['lr'])

    with pytest.raises(ValueError):
        GradientProjection(torch.optim.SGD([model.q], lr=0.1), [model.w], 2)  # w would never be updated
    opt.zero_grad()
    model.losses()[0].backward()
    with pytest.raises(RuntimeError):
        opt.step()  # forgot collect()
    with pytest.raises(IndexError):
        opt.collect(2)


# --- the combination as an object, and supports ---

def test_combination_objects_decide_the_weights_from_the_gram_matrix():
    torch.manual_seed(0)
    base = torch.randn(50, dtype=torch.float64)
    grads = torch.tensor([1., -0.7, 0.4], dtype=torch.float64)[:, None] * base + torch.randn(3, 50).double()
    _, stats = project_conflicting(grads, torch.Generator().manual_seed(5), return_stats=True)
    pcgrad = PCGrad(torch.Generator().manual_seed(5))
    weights = pcgrad.weights(grads @ grads.t(), 3)
    torch.testing.assert_close(weights, stats.weights)
    assert pcgrad.last_num_conflicts == stats.num_conflicts > 0 and pcgrad.num_conflicts_total == stats.num_conflicts
    plain = Sum()
    assert not plain.needs_gram and plain.weights(None, 3).tolist() == [1., 1., 1.]


class HalfEach(GradientCombination):
    """A combination that is neither PCGrad nor a sum: the plumbing must not care."""

    def weights(self, gram, num_tasks):
        assert gram.shape == (num_tasks, num_tasks)
        return torch.full((num_tasks,), 0.5, dtype=torch.float64)


def test_any_combination_object_plugs_in():
    # g1 = (-1, 0), g2 = (2, 2): update 0.5 g1 + 0.5 g2 = (0.5, 1); w = (1, 1) - 0.1 (0.5, 1) = (0.95, 0.9)
    model = TwoTaskModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w], 2, combination=HalfEach())
    _one_step(model, opt)
    torch.testing.assert_close(model.w.detach(), torch.tensor([0.95, 0.9]))
    with pytest.raises(ValueError, match='generator'):
        GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.w], 2, combination=HalfEach(),
                           generator=torch.Generator())


class NestedSlices(nn.Module):
    """Task i computes with the leading block W[:o_i, :c_i] of one shared weight, as a width-w sub-network does."""

    blocks = [(6, 5), (4, 3), (2, 2)]

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 5, 3, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(6, dtype=torch.float64))

    def losses(self, x, targets):
        out = []
        for (o, c), target in zip(self.blocks, targets):
            y = torch.einsum('ock,bck->bo', self.weight[:o, :c], x[:, :c]) + self.bias[:o]
            out.append(((y - target[:, :o]) ** 2).mean())
        return out


def _nested_run(supports: bool, steps: int = 4, layout: str = 'auto'):
    torch.manual_seed(0)
    model = NestedSlices()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, 3, dtype=torch.float64, generator=gen)
    base = torch.randn(8, 6, dtype=torch.float64, generator=gen)
    targets = [10 * base, -10 * base, 10 * base]  # opposite targets: the tasks' gradients conflict
    given = {model.weight: [(slice(0, o), slice(0, c)) for o, c in model.blocks],
             model.bias: [(slice(0, o),) for o, _ in model.blocks]} if supports else None
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.05), model.parameters(), 3,
                             generator=torch.Generator().manual_seed(2), supports=given, layout=layout)
    grams = []
    for _ in range(steps):
        opt.zero_grad()
        for i, loss in enumerate(model.losses(x, targets)):
            loss.backward()
            opt.collect(i)
        grams.append(opt.gram_matrix())
        opt.step()
    return model, opt, grams


def test_supports_give_the_dense_update():
    dense, dense_opt, dense_grams = _nested_run(supports=False)
    blocks, blocks_opt, block_grams = _nested_run(supports=True)
    assert dense_opt.num_conflicts_total == blocks_opt.num_conflicts_total > 0
    for a, b in zip(dense_grams, block_grams):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for name in ('weight', 'bias'):
        torch.testing.assert_close(getattr(blocks, name), getattr(dense, name), rtol=1e-12, atol=1e-12)
    # the dense Gram matrix is the Gram matrix of the flattened gradients
    model, opt, _ = _nested_run(supports=True, steps=0)
    opt.zero_grad()
    rows = []
    for i, loss in enumerate(model.losses(torch.ones(2, 5, 3, dtype=torch.float64), [torch.ones(2, 6)] * 3)):
        loss.backward()
        rows.append(torch.cat([model.weight.grad.reshape(-1), model.bias.grad]))
        opt.collect(i)
    flat = torch.stack(rows)
    torch.testing.assert_close(opt.gram_matrix(), flat @ flat.t())


def test_flat_layout_gives_the_block_update():
    # the accelerator's layout (one row per task, a few multi-tensor kernels) against the CPU's per-block reading
    blocks, blocks_opt, _ = _nested_run(supports=True, steps=6, layout='blocks')
    flat, flat_opt, _ = _nested_run(supports=True, steps=6, layout='flat')
    assert flat_opt.num_conflicts_total == blocks_opt.num_conflicts_total > 0
    for name in ('weight', 'bias'):
        # the same arithmetic summed in another order: float64 rounding, carried over six steps
        torch.testing.assert_close(getattr(flat, name), getattr(blocks, name), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="layout 'dense'"):
        GradientProjection(torch.optim.SGD(flat.parameters(), lr=0.1), [flat.weight], 3, layout='dense')


def test_supports_must_be_leading_slices():
    model = NestedSlices()
    with pytest.raises(ValueError, match='leading slices'):
        GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.weight], 1,
                           supports={model.weight: [(slice(1, 3),)]})
    with pytest.raises(ValueError, match='2 tasks, expected 3'):
        GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.weight], 3,
                           supports={model.weight: [(), ()]})


class TwoLayerModel(nn.Module):
    """Two tasks that agree on the whole shared vector and disagree in one layer: a test of the granularity."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1., 1.]))
        self.b = nn.Parameter(torch.tensor([0.]))

    def losses(self, scale: float = 1.):
        # dL1/da = (1, 0), dL1/db = 3; dL2/da = (-1, 1), dL2/db = 3
        # whole vectors: g1 = (1, 0, 3), g2 = (-1, 1, 3), g1.g2 = 8 > 0 (no conflict); in layer a: -1 < 0
        return [scale * (self.a[0] + 3 * self.b.sum()), scale * (-self.a[0] + self.a[1] + 3 * self.b.sum())]


@pytest.mark.parametrize('granularity', ['model', 'layer'])
def test_layer_granularity_projects_each_parameter_on_its_own(granularity):
    model = TwoLayerModel()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.1), [model.a, model.b], num_tasks=2,
                             granularity=granularity)
    _one_step(model, opt)
    if granularity == 'model':  # the whole gradients agree: the plain sum
        torch.testing.assert_close(model.a.grad, torch.tensor([0., 1.]))
        assert opt.last_num_conflicts == 0
    else:  # layer a alone is PCGrad of (1, 0) and (-1, 1): (1, 0) + (0.5, 0.5) and (-1, 1) + (1, 0) = (0.5, 1.5)
        expected = project_conflicting(torch.tensor([[1., 0.], [-1., 1.]]))
        torch.testing.assert_close(model.a.grad, expected)
        torch.testing.assert_close(model.a.grad, torch.tensor([0.5, 1.5]))
        assert opt.last_num_conflicts == 2
    torch.testing.assert_close(model.b.grad, torch.tensor([6.]))  # agreeing layer: summed either way
    # the diagnostic counts the same whatever decides: one of the two layers has a negative dot product; a model
    # decision that projects nothing never computes the squared norms (NaN on the diagonal of a reached parameter)
    norm = float('nan') if granularity == 'model' else None
    expected_grams = torch.tensor([[[norm or 1., -1.], [-1., norm or 2.]], [[norm or 9., 9.], [9., norm or 9.]]],
                                  dtype=torch.float64)
    torch.testing.assert_close(opt.last_layer_grams, expected_grams, equal_nan=True)
    assert count_layer_conflicts(opt.last_layer_grams, task=0) == (2, 1, 1)


def _nested_steps(steps: int, scaler_enabled: bool, losses_scale):
    """NestedSlices trained `steps` steps; with a disabled GradScaler stepping or not (the whole-Gram path)."""
    torch.manual_seed(0)
    model = NestedSlices()
    given = {model.weight: [(slice(0, o), slice(0, c)) for o, c in model.blocks],
             model.bias: [(slice(0, o),) for o, _ in model.blocks]}
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.05), [model.weight, model.bias], 3,
                             generator=torch.Generator().manual_seed(2), supports=given, merge='mean')
    scaler = _ExactPathScaler() if scaler_enabled else None
    gen = torch.Generator().manual_seed(3)
    conflicts = []
    for _ in range(steps):
        x = torch.randn(4, 5, 3, dtype=torch.float64, generator=gen)
        base = torch.randn(4, 6, dtype=torch.float64, generator=gen)
        opt.zero_grad()
        for i, loss in enumerate(model.losses(x, [s * base for s in losses_scale])):
            loss.backward()
            opt.collect(i)
        opt.step(grad_scaler=scaler)
        conflicts.append(opt.last_num_conflicts)
    return model, opt, conflicts


class _ExactPathScaler:
    """Stands for an enabled grad scaler at scale 1: `step` then reads the whole Gram matrix every step."""

    def is_enabled(self) -> bool:
        return True

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer):
        return optimizer.step()


@pytest.mark.parametrize('losses_scale', [(1., 2., 3.), (10., -10., 3.)], ids=['agreeing', 'conflicting'])
def test_norms_read_only_when_projecting_give_the_same_updates_and_orders(losses_scale):
    fast, fast_opt, fast_conflicts = _nested_steps(5, False, losses_scale)
    whole, whole_opt, whole_conflicts = _nested_steps(5, True, losses_scale)
    assert fast_conflicts == whole_conflicts
    assert (sum(fast_conflicts) == 0) == (losses_scale[1] > 0)
    if fast_conflicts[-1] == 0:  # the norms were never read
        assert torch.isnan(fast_opt.last_layer_grams.diagonal(dim1=1, dim2=2)).all()
    for a, b in zip(fast.parameters(), whole.parameters()):
        assert torch.equal(a, b)  # bit-identical: the agreeing weights are exactly PCGrad's without conflicts
    # the random orders were drawn the same way, so every later step (and a resumed run) decides alike
    assert torch.equal(fast_opt.generator.get_state(), whole_opt.generator.get_state())


def _collect_nested(opt, model):
    """Backward each of NestedSlices' three conflicting losses into `opt`; returns each task's flat gradients."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 3, dtype=torch.float64, generator=gen)
    base = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    grads = {'weight': [], 'bias': []}
    opt.zero_grad()
    for i, loss in enumerate(model.losses(x, [10 * base, -10 * base, 3 * base])):
        loss.backward()
        for name in grads:
            grads[name].append(getattr(model, name).grad.reshape(-1).clone())
        opt.collect(i)
    return {name: torch.stack(rows) for name, rows in grads.items()}


def test_layer_grams_sum_to_the_model_gram_and_layer_projection_matches_per_parameter_pcgrad():
    torch.manual_seed(0)
    model = NestedSlices()
    opt = GradientProjection(torch.optim.SGD(model.parameters(), lr=0.05), [model.weight, model.bias], 3,
                             generator=torch.Generator().manual_seed(2), granularity='layer')
    grads = _collect_nested(opt, model)
    grams = opt.layer_gram_matrices()
    torch.testing.assert_close(grams.sum(0), opt.gram_matrix())
    for k, name in enumerate(('weight', 'bias')):
        torch.testing.assert_close(grams[k], grads[name] @ grads[name].t())
    opt.step()
    # granularity 'layer': PCGrad on each parameter's gradients alone, drawing its orders from the one generator
    generator = torch.Generator().manual_seed(2)
    conflicts = 0
    for name in ('weight', 'bias'):
        expected, stats = project_conflicting(grads[name], generator=generator, return_stats=True)
        torch.testing.assert_close(getattr(model, name).grad.reshape(-1), expected)
        conflicts += stats.num_conflicts
    assert opt.last_num_conflicts == conflicts > 0  # the step's count over its parameters, not the last one's


def test_layer_granularity_refuses_the_flat_layout_and_unknown_names():
    model = TwoLayerModel()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="granularity='layer' decides per parameter tensor"):
        GradientProjection(sgd, [model.a], 2, granularity='layer', layout='flat')
    with pytest.raises(ValueError, match="Unknown granularity 'tensor'"):
        GradientProjection(sgd, [model.a], 2, granularity='tensor')
    opt = GradientProjection(sgd, [model.a, model.b], 2, granularity='layer', layout='auto')
    assert not opt._uses_flat_layout()  # 'auto' reads blocks for 'layer' on any device
    assert count_layer_conflicts(None) == (0, 0, 0)
