"""The engine: graph recording, the backward walk, accumulation, grad mode, errors."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import Function
from minigrad.backends.cpu import CPUBackend
from minigrad.device import Device


def test_chain_of_ten_thousand_ops_backpropagates(device):
    x = mg.tensor(1.0, dtype="float64", device=device, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**10_000, rel=1e-9)


def test_gradients_accumulate_across_backward_calls(device):
    x = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), [3 + 2, 3 + 4])


def test_diamond_graph_sums_both_paths(device):
    x = mg.tensor(2.0, device=device, requires_grad=True)
    a = x * x
    (a + a * 3).backward()  # d/dx 4x² = 8x
    assert x.grad.item() == pytest.approx(16.0)


def test_leaf_gradients_do_not_alias_each_other(device):
    a = mg.ones(3, device=device, requires_grad=True)
    b = mg.ones(3, device=device, requires_grad=True)
    (a + b).sum().backward()
    with mg.no_grad():
        a.grad.mul_(5)
    np.testing.assert_allclose(b.grad.cpu().numpy(), [1, 1, 1])


def test_backward_grad_argument_is_not_aliased(device):
    x = mg.ones(3, device=device, requires_grad=True)
    g = mg.tensor([1.0, 2.0, 3.0], device=device)
    x.reshape(3).backward(g)  # the gradient reaches x as a view of g
    with mg.no_grad():
        x.grad.mul_(0)
    np.testing.assert_allclose(g.cpu().numpy(), [1, 2, 3])
    x.grad = None
    (x + 0).backward(g)  # ... and here as g itself
    with mg.no_grad():
        x.grad.mul_(0)
    np.testing.assert_allclose(g.cpu().numpy(), [1, 2, 3])
    x.grad = None
    x.backward(g)  # x is the root
    with mg.no_grad():
        x.grad.mul_(0)
    np.testing.assert_allclose(g.cpu().numpy(), [1, 2, 3])


def test_second_backward_through_freed_graph_raises(device):
    x = mg.ones(2, device=device, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward(device):
    x = mg.ones(2, device=device, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), 4 * np.e * np.ones(2), rtol=1e-6)


def test_backward_on_non_scalar_needs_grad(device):
    x = mg.ones(2, 2, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="single-element.*shape \\(2, 2\\)"):
        (x * 2).backward()


def test_backward_grad_of_wrong_shape(device):
    x = mg.ones(2, 2, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="grad has shape \\(3,\\) but the tensor has shape \\(2, 2\\)"):
        (x * 2).backward(mg.ones(3, device=device))


def test_backward_on_tensor_without_grad(device):
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.ones(2, device=device).sum().backward()


def test_requires_grad_on_integer_tensor_raises(device):
    with pytest.raises(RuntimeError, match="floating point"):
        mg.tensor([1, 2], device=device, requires_grad=True)
    t = mg.arange(3, device=device)
    with pytest.raises(RuntimeError, match="floating point"):
        t.requires_grad = True


def test_operands_on_different_devices_raise():
    other = CPUBackend(Device("cpu"))  # a second backend object stands in for another device
    a = mg.ones(2)
    b = mg.tensor([1.0, 2.0])
    b._set_fields(b.array, other)
    with pytest.raises(RuntimeError, match="same device"):
        a + b


def test_no_grad_context_and_decorator(device):
    x = mg.ones(2, device=device, requires_grad=True)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        assert not (x * 2).requires_grad
        with mg.enable_grad():
            assert (x * 2).requires_grad
    assert mg.is_grad_enabled()

    @mg.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and mg.is_grad_enabled()
    with mg.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mg.is_grad_enabled()


def test_non_leaf_retain_grad_and_grad_fn(device):
    x = mg.ones(3, device=device, requires_grad=True)
    h = x * 2
    h.retain_grad()
    assert not h.is_leaf and h.grad_fn is not None and x.is_leaf
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.cpu().numpy(), [4, 4, 4])
    np.testing.assert_allclose(x.grad.cpu().numpy(), [8, 8, 8])


def test_detach_cuts_the_graph(device):
    x = mg.ones(2, device=device, requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="non-leaf|leaf tensors"):
        (x * 2).requires_grad = False


def test_autograd_grad_returns_without_touching_dot_grad(device):
    x = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    x.grad = mg.tensor([9.0, 9.0], device=device)
    (gx,) = mg.grad((x * x).sum(), [x])
    np.testing.assert_allclose(gx.cpu().numpy(), [2, 4])
    np.testing.assert_allclose(x.grad.cpu().numpy(), [9, 9])


class _BadShape(Function):
    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return grad[:1]


class _MissingGrad(Function):
    def forward(self, x, y):
        return x + y

    def backward(self, grad):
        return (grad,)


def test_custom_function_contract_is_checked(device):
    x = mg.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="_BadShape.backward returned a gradient of shape \\(1,\\)"):
        _BadShape.apply(x).sum().backward()
    y = mg.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradient for input 1"):
        _MissingGrad.apply(x, y).sum().backward()


class _Cube(Function):
    def forward(self, x, scale=1.0):
        self.save_for_backward(x)
        self.scale = scale
        return x * x * x * scale

    def backward(self, grad):
        (x,) = self.saved_tensors
        return 3 * x * x * self.scale * grad


def test_custom_function_passes_gradcheck(device):
    x = mg.randn(4, dtype="float64", device=device, requires_grad=True)
    assert mg.testing.gradcheck(lambda t: _Cube.apply(t, scale=0.5), [x])


def test_outputs_without_grad_are_constants(device):
    x = mg.ones(3, device=device, requires_grad=True)
    assert not (x > 0).requires_grad
    assert not x.argmax().requires_grad


def test_in_place_change_of_a_saved_input_is_refused(device):
    w = mg.ones(3, device=device, requires_grad=True)
    x = mg.tensor([1.0, 2.0, 3.0], device=device)
    y = (w * x).sum()
    with mg.no_grad():
        x.mul_(2)  # x is saved for w's gradient
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_optimizer_step_between_forward_and_backward_is_refused(device):
    lin = mg.nn.Linear(3, 2).to(device)
    opt = mg.optim.SGD(lin.parameters(), lr=0.1)
    lin(mg.ones(1, 3, device=device)).sum().backward()
    loss = lin(mg.ones(1, 3, device=device)).sum()
    opt.step()  # updates the weight the pending graph used
    with pytest.raises(RuntimeError, match="in-place"):
        loss.backward()


def test_in_place_change_after_backward_is_fine(device):
    w = mg.ones(3, device=device, requires_grad=True)
    (w * 2).sum().backward()
    with mg.no_grad():
        w -= 0.1 * w.grad
    (w * 2).sum().backward()
    assert w._version == 1
