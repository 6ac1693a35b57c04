"""The engine's contract: several outputs per Function, non-differentiable outputs, grad() for any
inputs, backward(inputs=), hooks, version counters shared by views, clear errors."""

import copy

import numpy as np
import pytest

import minigrad as mg
from minigrad import Function
from minigrad.autograd import grad


class _SplitStats(Function):
    """Three outputs: x·2, x², and the sum of x (marked non-differentiable)."""

    def forward(self, x):
        self.save_for_backward(x)
        total = x.sum(keepdims=True)
        self.mark_non_differentiable(total)
        return x * 2, x * x, total

    def backward(self, g_double, g_square, g_total):
        (x,) = self.saved_tensors
        assert g_total is None  # never receives one
        out = 0
        if g_double is not None:
            out = out + 2 * g_double
        if g_square is not None:
            out = out + 2 * x * g_square
        return out


def test_a_function_may_return_several_outputs(device):
    x = mg.tensor([1.0, 2.0, 3.0], dtype="float64", device=device, requires_grad=True)
    double, square, total = _SplitStats.apply(x)
    assert double.grad_fn is square.grad_fn and (double.output_nr, square.output_nr) == (0, 1)
    assert not total.requires_grad and total.grad_fn is None
    (double.sum() + 3 * square.sum()).backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), 2 + 6 * np.array([1.0, 2.0, 3.0]))


def test_an_unused_output_gets_none(device):
    x = mg.tensor([1.0, 2.0], dtype="float64", device=device, requires_grad=True)
    _, square, _ = _SplitStats.apply(x)
    square.sum().backward()  # the backward asserts its other gradients are None
    np.testing.assert_allclose(x.grad.cpu().numpy(), [2.0, 4.0])


def test_several_outputs_pass_gradcheck_and_gradgradcheck_through_the_fallback(device):
    x = mg.randn(4, dtype="float64", device=device, requires_grad=True)
    assert mg.testing.gradcheck(lambda t: _SplitStats.apply(t)[:2], [x])
    (g,) = grad(_SplitStats.apply(x)[1].sum(), x, create_graph=True)  # first derivatives are right...
    np.testing.assert_allclose(g.detach().cpu().numpy(), 2 * x.detach().cpu().numpy())
    with pytest.raises(RuntimeError, match="_SplitStats is not twice differentiable.*vjp"):
        grad(g.sum(), x)  # ... and the second says why it cannot be taken


class _TwiceDifferentiable(Function):
    """Only vjp: backward is derived from it."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x * x

    def vjp(self, grad):
        (x,) = self.saved_as_tensors()
        return 3 * x * x * grad


def test_a_function_with_only_vjp_works_in_both_modes(device):
    x = mg.tensor([1.0, 2.0], dtype="float64", device=device, requires_grad=True)
    _TwiceDifferentiable.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), [3.0, 12.0])
    (g,) = grad(_TwiceDifferentiable.apply(x).sum(), x, create_graph=True)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h.cpu().numpy(), [6.0, 12.0])
    assert mg.testing.gradgradcheck(_TwiceDifferentiable.apply, [x])


def test_grad_of_intermediate_tensors_and_several_outputs(device):
    x = mg.tensor([1.0, 2.0], dtype="float64", device=device, requires_grad=True)
    h = x * 3
    y = (h * h).sum()
    z = h.sum()
    gh, gx = grad([y, z], [h, x])
    np.testing.assert_allclose(gh.cpu().numpy(), 2 * 3 * np.array([1.0, 2.0]) + 1)
    np.testing.assert_allclose(gx.cpu().numpy(), 3 * (2 * 3 * np.array([1.0, 2.0]) + 1))
    assert x.grad is None and h.grad is None


def test_grad_only_runs_the_part_of_the_graph_leading_to_the_inputs(device):
    calls = []

    class _Spy(Function):
        def forward(self, x):
            return x * 1

        def backward(self, g):
            calls.append(1)
            return g

    a = mg.ones(2, device=device, requires_grad=True)
    b = mg.ones(2, device=device, requires_grad=True)
    y = (a * 2).sum() + _Spy.apply(b).sum()
    (ga,) = grad(y, a)
    np.testing.assert_allclose(ga.cpu().numpy(), [2, 2])
    assert calls == []


def test_allow_unused(device):
    x = mg.ones(2, device=device, requires_grad=True)
    unused = mg.ones(2, device=device, requires_grad=True)
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="input 1.*not have been used.*allow_unused=True"):
        grad(y, [x, unused], retain_graph=True)
    gx, gu = grad(y, [x, unused], allow_unused=True)
    assert gu is None and gx is not None


def test_backward_with_inputs_accumulates_only_into_them(device):
    a = mg.ones(2, device=device, requires_grad=True)
    b = mg.ones(2, device=device, requires_grad=True)
    h = a * b
    h.retain_grad()
    (h * 2).sum().backward(inputs=[a, h])
    np.testing.assert_allclose(a.grad.cpu().numpy(), [2, 2])
    np.testing.assert_allclose(h.grad.cpu().numpy(), [2, 2])
    assert b.grad is None


def test_create_graph_gives_differentiable_grads_and_keeps_the_graph(device):
    x = mg.tensor(3.0, dtype="float64", device=device, requires_grad=True)
    y = x ** 3
    y.backward(create_graph=True)
    assert x.grad.requires_grad
    np.testing.assert_allclose(x.grad.item(), 27.0)
    (second,) = grad(x.grad, x)
    assert second.item() == pytest.approx(18.0)
    y.backward()  # the graph was retained (retain_graph defaults to create_graph)


def test_third_derivative(device):
    x = mg.tensor(0.7, dtype="float64", device=device, requires_grad=True)
    y = x.sigmoid() * x.tanh()
    g1 = grad(y, x, create_graph=True)[0]
    g2 = grad(g1, x, create_graph=True)[0]
    g3 = grad(g2, x)[0]
    # against central differences of the second derivative
    def second(v):
        t = mg.tensor(v, dtype="float64", device=device, requires_grad=True)
        d = grad(t.sigmoid() * t.tanh(), t, create_graph=True)[0]
        return grad(d, t)[0].item()
    h = 1e-5
    assert g3.item() == pytest.approx((second(0.7 + h) - second(0.7 - h)) / (2 * h), rel=1e-6)


def test_gradient_of_a_grad_that_was_freed_says_so(device):
    x = mg.ones(2, dtype="float64", device=device, requires_grad=True)
    (g,) = grad((x.exp() * x).sum(), x, create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        grad(g.sum(), x)


def test_tensor_hooks_see_and_replace_gradients(device):
    x = mg.ones(3, device=device, requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: seen.append(g.cpu().numpy().copy()) or g * 2)
    h = x * 3
    h.register_hook(lambda g: g + 1)  # on a non-leaf: the gradient flowing into its creator
    (h + x).sum().backward()  # x receives 3·(1+1) along h and 1 directly: hooks see the total 7
    np.testing.assert_allclose(seen[0], [7, 7, 7])
    np.testing.assert_allclose(x.grad.cpu().numpy(), [14, 14, 14])
    handle.remove()
    x.grad = None
    (x * 1).sum().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), [1, 1, 1])


def test_post_accumulate_grad_hook_runs_once_per_backward_after_accumulation(device):
    w = mg.ones(2, device=device, requires_grad=True)
    events = []
    w.register_post_accumulate_grad_hook(lambda t: events.append(t.grad.cpu().numpy().copy()))
    (w * w + w * 3).sum().backward()  # three edges reach w
    assert len(events) == 1
    np.testing.assert_allclose(events[0], [5, 5])
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_hook_returning_a_wrong_shape_is_refused(device):
    x = mg.ones(3, device=device, requires_grad=True)
    x.register_hook(lambda g: g[:1])
    with pytest.raises(RuntimeError, match="hook returned a gradient of shape \\(1,\\)"):
        (x * 2).sum().backward()


@pytest.mark.parametrize("modify", [
    lambda w: w[:].add_(100),
    lambda w: w.detach().add_(100),
    lambda w: w.data.add_(100),
    lambda w: w.reshape(2, 1).add_(100),
    lambda w: w.T.mul_(2),
])
def test_in_place_change_through_a_view_is_caught(device, modify):
    w = mg.tensor([1.0, 2.0], device=device)
    x = mg.tensor([1.0, 1.0], device=device, requires_grad=True)
    y = (x * w).sum()
    modify(w)
    with pytest.raises(RuntimeError, match="modified by an inplace|modified by an in-place"):
        y.backward()


def test_in_place_change_of_the_base_after_a_view_was_used_is_caught(device):
    w = mg.tensor([1.0, 2.0], device=device)
    x = mg.tensor([1.0], device=device, requires_grad=True)
    y = (x * w[:1]).sum()
    w.add_(100)
    with pytest.raises(RuntimeError, match="in-place"):
        y.backward()


def test_backward_returning_a_tensor_names_the_mistake(device):
    class _ReturnsTensor(Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return mg.tensor(g * 2)

    x = mg.ones(2, device=device, requires_grad=True)
    with pytest.raises(TypeError, match="_ReturnsTensor.backward returned a Tensor for input 0.*raw arrays"):
        _ReturnsTensor.apply(x).sum().backward()


def test_next_functions_and_deep_copy_of_grad_results(device):
    x = mg.ones(2, device=device, requires_grad=True)
    y = x * 2
    (fn, nr), (_, _) = y.grad_fn.next_functions
    assert fn is x and nr == 0
    (g,) = grad(y.sum(), x)
    assert copy.deepcopy(g).shape == (2,)
