"""The layers, losses and functions PyTorch scripts use (issue 13 items 5 and 7, 10.10-10.12), against PyTorch."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F


def _pair(shape, seed=0, scale=2.0):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    return mg.tensor(a, requires_grad=True), a


def _torch_grad(torch, fn, a, *extra):
    t = torch.tensor(a, requires_grad=True)
    out = fn(t, *extra)
    out.sum().backward()
    return out.detach().numpy(), t.grad.numpy()


ACTIVATIONS = [
    ("gelu", lambda x: F.gelu(x), lambda t, x: t.nn.functional.gelu(x)),
    ("gelu-tanh", lambda x: nn.GELU("tanh")(x), lambda t, x: t.nn.functional.gelu(x, approximate="tanh")),
    ("leaky_relu", lambda x: nn.LeakyReLU(0.2)(x), lambda t, x: t.nn.functional.leaky_relu(x, 0.2)),
    ("softplus", lambda x: nn.Softplus(beta=2.0, threshold=3.0)(x),
     lambda t, x: t.nn.functional.softplus(x, beta=2.0, threshold=3.0)),
    ("erf", lambda x: mg.erf(x), lambda t, x: t.erf(x)),
]


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations_match_pytorch(name, ours, theirs):
    torch = pytest.importorskip("torch")
    x, a = _pair((4, 5))
    out = ours(x)
    out.sum().backward()
    t_out, t_grad = _torch_grad(torch, lambda t: theirs(torch, t), a)
    np.testing.assert_allclose(out.detach().numpy(), t_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), t_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations_keep_float32(name, ours, theirs):
    x = mg.randn(3, 4, requires_grad=True)
    out = ours(x)
    out.sum().backward()
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


def test_gelu_exact_values():
    x = mg.tensor([-1.0, 0.0, 1.0], dtype="float64")
    np.testing.assert_allclose(F.gelu(x).numpy(), [-0.15865525393145707, 0.0, 0.8413447460685429], rtol=1e-15)


def test_relu_accepts_inplace_positionally_and_by_name():
    assert nn.ReLU(True).inplace and nn.ReLU(inplace=True).inplace and not nn.ReLU().inplace
    assert "inplace=True" in repr(nn.ReLU(True))


def test_inplace_relu_overwrites_where_no_graph_records():
    x = mg.tensor([-1.0, 2.0])
    y = nn.ReLU(inplace=True)(x)
    assert y is x and x.tolist() == [0.0, 2.0]
    with mg.no_grad():
        w = mg.tensor([-3.0, 1.0], requires_grad=True)
        assert F.relu(w, inplace=True) is w and w.tolist() == [0.0, 1.0]


def test_inplace_relu_on_a_recorded_tensor_is_equivalent_out_of_place():
    """The ResNet pattern ``out += residual; out = relu(out)`` gives PyTorch's values and gradients."""
    x = mg.tensor([-1.0, 2.0, 0.5], requires_grad=True)
    out = x * 2
    out += x
    out = nn.ReLU(inplace=True)(out)
    out.sum().backward()
    assert out.tolist() == [0.0, 6.0, 1.5] and x.grad.tolist() == [0.0, 3.0, 3.0]


def test_inplace_relu_of_a_saved_input_is_caught_at_backward():
    w = mg.tensor([1.0, 1.0], requires_grad=True)
    x = mg.tensor([-1.0, 2.0])
    y = (w * x).sum()
    nn.ReLU(inplace=True)(x)  # changes x, which the product saved for w's gradient
    with pytest.raises(RuntimeError, match="modified by an in-?place operation|inplace|in-place"):
        y.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_losses_match_pytorch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 3)) * 4
    logits[0, 0] = 60.0  # far in the tail: the logits form must stay exact
    target = rng.integers(0, 2, (6, 3)).astype(np.float64)
    weight = rng.uniform(0.5, 2.0, (6, 3))
    pos = np.array([1.0, 2.0, 0.5])
    x = mg.tensor(logits, requires_grad=True)
    ours = nn.BCEWithLogitsLoss(weight=mg.tensor(weight), reduction=reduction, pos_weight=mg.tensor(pos))(
        x, mg.tensor(target))
    ours.sum().backward()
    tx = torch.tensor(logits, requires_grad=True)
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(weight), reduction=reduction,
                                        pos_weight=torch.tensor(pos))(tx, torch.tensor(target))
    theirs.sum().backward()
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-15)

    probs = 1 / (1 + np.exp(-logits))
    probs[1, 1] = 0.0  # log(0) is clamped at -100, as in PyTorch
    p = mg.tensor(probs, requires_grad=True)
    ours = nn.BCELoss(reduction=reduction)(p, mg.tensor(target))
    ours.sum().backward()
    tp = torch.tensor(probs, requires_grad=True)
    theirs = torch.nn.BCELoss(reduction=reduction)(tp, torch.tensor(target))
    theirs.sum().backward()
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9)


def test_bce_rejects_probabilities_out_of_range_and_shape_mismatch():
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(mg.tensor([1.5]), mg.tensor([1.0]))
    with pytest.raises(ValueError, match="same size"):
        F.binary_cross_entropy_with_logits(mg.zeros(2, 1), mg.zeros(2))


def test_embedding_and_padding_idx():
    emb = nn.Embedding(6, 3, padding_idx=0)
    assert emb.weight.detach().numpy()[0].tolist() == [0.0, 0.0, 0.0]
    idx = mg.tensor([[0, 2], [2, 5]])
    out = emb(idx)
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    g = emb.weight.grad.numpy()
    assert g[0].tolist() == [0, 0, 0] and g[2].tolist() == [2, 2, 2] and g[5].tolist() == [1, 1, 1]
    with pytest.raises(IndexError, match="out of range"):
        emb(mg.tensor([6]))
    with pytest.raises(TypeError, match="integer"):
        emb(mg.tensor([0.0]))
    pre = nn.Embedding.from_pretrained(mg.eye(3))
    assert not pre.weight.requires_grad and pre(mg.tensor([1])).tolist() == [[0.0, 1.0, 0.0]]


def test_dropout2d_drops_whole_channels():
    x = mg.ones(4, 8, 3, 3)
    y = nn.Dropout2d(0.5)(x).numpy()
    per_channel = y.reshape(4, 8, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1))
    assert 0 < (per_channel == 0).all(-1).sum() < 32
    assert nn.Dropout2d(0.5).eval()(x) is x


def test_module_dict():
    d = nn.ModuleDict({"a": nn.Linear(2, 3)})
    d["b"] = nn.Linear(3, 1)
    assert list(d) == ["a", "b"] and len(d) == 2 and "b" in d
    assert len(list(d.parameters())) == 4 and set(d.state_dict()) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert d.pop("a").out_features == 3 and list(d.keys()) == ["b"]


def test_lazy_modules_infer_their_sizes_and_become_eager():
    mg.manual_seed(0)
    net = nn.Sequential(nn.LazyConv2d(4, 3, padding=1), nn.LazyBatchNorm2d(), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(5), nn.LazyBatchNorm1d())
    opt = mg.optim.SGD(net.parameters(), lr=0.1)  # built before the shapes are known, as PyTorch allows
    assert isinstance(net[0].weight, nn.UninitializedParameter) and net[0].has_uninitialized_params()
    out = net(mg.randn(2, 3, 4, 4))
    assert out.shape == (2, 5)
    assert [type(m).__name__ for m in net] == ["Conv2d", "BatchNorm2d", "ReLU", "Flatten", "Linear", "BatchNorm1d"]
    assert net[0].weight.shape == (4, 3, 3, 3) and net[4].weight.shape == (5, 64) and net[4].in_features == 64
    assert net[1].running_mean.shape == (4,) and net[5].num_features == 5
    assert type(net[0].weight) is nn.Parameter
    before = net[4].weight.detach().numpy().copy()
    out.sum().backward()
    opt.step()
    assert not np.array_equal(before, net[4].weight.detach().numpy())  # the optimizer holds the same objects


def test_integer_input_to_linear_matmul_conv_is_a_type_error_at_forward():
    with pytest.raises(TypeError, match="linear.*int64"):
        nn.Linear(2, 3)(mg.tensor([[1, 2]]))
    with pytest.raises(TypeError, match="matmul"):
        mg.tensor([[1, 2]]) @ mg.ones(2, 2)
    with pytest.raises(TypeError, match="conv2d"):
        nn.Conv2d(1, 1, 1)(mg.zeros(1, 1, 2, 2, dtype="int64"))
    assert (mg.tensor([[1, 2]]) @ mg.tensor([[1], [1]])).tolist() == [[3]]  # integers with integers still work


@pytest.mark.parametrize("op", [mg.maximum, mg.minimum])
def test_maximum_minimum_backward_in_float32(op):
    """10.11: the tie mask was float64, so the gradient of a float32 input was refused."""
    x = mg.tensor([0.5, 1.0, 2.0], requires_grad=True)
    op(x, 1.0).sum().backward()
    assert x.grad.dtype == np.float32
    assert x.grad.tolist() == ([0.0, 0.5, 1.0] if op is mg.maximum else [1.0, 0.5, 0.0])


NLL_BAD_TARGETS = [
    (lambda: mg.tensor([-1, 0]), IndexError, "out of range"),
    (lambda: mg.tensor([[0], [1]]), ValueError, "target must have shape"),
    (lambda: np.array([0, 1]), TypeError, "target must be a Tensor"),
    (lambda: mg.tensor([0.0, 1.0]), TypeError, "integer class indices"),
    (lambda: mg.tensor([0, 3]), IndexError, "out of range"),
]


@pytest.mark.parametrize("loss", [F.nll_loss, F.cross_entropy])
@pytest.mark.parametrize("make,error,match", NLL_BAD_TARGETS)
def test_nll_loss_validates_its_target_like_cross_entropy(loss, make, error, match):
    """10.10: nll_loss silently picked the last class for -1 and broadcast an (N, 1) target."""
    with pytest.raises(error, match=match):
        loss(mg.randn(2, 3), make())


def test_nll_loss_with_ignore_index_and_weight_matches_pytorch():
    torch = pytest.importorskip("torch")
    logp, a = _pair((4, 3))
    target = [0, 2, -100, 1]
    w = np.array([1.0, 2.0, 0.5])
    ours = F.nll_loss(logp, mg.tensor(target), weight=mg.tensor(w))
    ours.backward()
    ta = torch.tensor(a, requires_grad=True)
    theirs = torch.nn.functional.nll_loss(ta, torch.tensor(target), weight=torch.tensor(w))
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    np.testing.assert_allclose(logp.grad.numpy(), ta.grad.numpy(), rtol=1e-12)


def test_tensor_comparison_and_shape_methods():
    a, b = mg.tensor([1, 2, 3]), mg.tensor([3, 2, 1])
    assert a.eq(b).tolist() == [False, True, False] and a.ne(b).tolist() == [True, False, True]
    assert a.lt(b).tolist() == [True, False, False] and a.le(2).tolist() == [True, True, False]
    assert a.gt(b).tolist() == [False, False, True] and a.ge(b).tolist() == [False, True, True]
    assert a.equal(mg.tensor([1, 2, 3])) and not a.equal(b)
    pred = mg.tensor([[1], [0]])
    target = mg.tensor([1, 1])
    assert pred.eq(target.view_as(pred)).sum().item() == 1  # pytorch/examples' accuracy line
    assert mg.ones(2, 3).reshape_as(mg.zeros(3, 2)).shape == (3, 2)
    assert mg.ones(1, 3).expand_as(mg.zeros(4, 3)).shape == (4, 3)
    assert mg.ones(2, dtype="int64").type_as(mg.zeros(1)).dtype == np.float32


def test_accelerator_device_selection_idiom():
    device = mg.accelerator.current_accelerator() if mg.accelerator.is_available() else "cpu"
    x = mg.zeros(2, device=device)
    assert mg.accelerator.is_available() == mg.cuda.is_available()
    assert mg.accelerator.device_count() == mg.cuda.device_count()
    assert (mg.accelerator.current_accelerator() is None) == (not mg.cuda.is_available())
    assert x.device.type in ("cpu", "cuda") and mg.accelerator.current_device_index() == 0
