"""Tensor creation, conversion, dtypes, repr, in-place rules and NumPy interop."""

import numpy as np
import pytest

import minigrad as mg


def test_factories_and_default_dtypes(device):
    assert mg.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert mg.tensor([1, 2], device=device).dtype == np.int64
    assert mg.tensor([True], device=device).dtype == np.bool_
    assert mg.tensor(np.ones(2), device=device).dtype == np.float64  # NumPy arrays keep their dtype
    assert mg.zeros(2, 3, device=device).shape == (2, 3)
    assert mg.ones((2, 3), dtype="float64", device=device).dtype == np.float64
    assert mg.full((2,), 7, device=device).dtype == np.int64
    assert mg.arange(5, device=device).tolist() == [0, 1, 2, 3, 4]
    assert mg.arange(0, 1, 0.25, device=device).dtype == np.float32
    assert mg.eye(3, device=device).numpy_view().trace() == 3
    x = mg.randn(2, 3, device=device)
    for like in (mg.zeros_like, mg.ones_like, mg.randn_like, mg.rand_like, mg.empty_like):
        y = like(x)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert mg.full_like(x, 2.0).numpy_view().max() == 2.0
    r = mg.randint(0, 5, size=(100,), device=device).numpy_view()
    assert r.min() >= 0 and r.max() < 5


def test_manual_seed_is_reproducible(device):
    mg.manual_seed(7)
    a = mg.randn(5, device=device).tolist()
    mg.manual_seed(7)
    assert mg.randn(5, device=device).tolist() == a


def test_tensor_copies_but_from_numpy_shares():
    a = np.ones(3, dtype=np.float32)
    t = mg.tensor(a)
    a[0] = 5
    assert t.tolist() == [1, 1, 1]
    s = mg.from_numpy(a)
    a[1] = 7
    assert s.tolist() == [5, 7, 1]
    assert mg.as_tensor(a).array is a


def test_bad_data_and_dtypes_raise():
    with pytest.raises(TypeError, match="could not convert"):
        mg.tensor(["a", "b"])
    with pytest.raises(TypeError, match="unsupported dtype"):
        mg.tensor([1.0], dtype="complex64")
    with pytest.raises(ValueError, match="non-negative"):
        mg.zeros(-1)
    with pytest.raises(ValueError, match="invalid device|unknown device"):
        mg.zeros(2, device="tpu")


def test_item_numpy_tolist_and_conversions(device):
    x = mg.tensor([[1.5, 2.5]], device=device)
    assert mg.tensor(3.5, device=device).item() == 3.5
    with pytest.raises(ValueError, match="exactly one element"):
        x.item()
    assert x.tolist() == [[1.5, 2.5]]
    assert x.to("float64").dtype == np.float64
    assert x.double().float().dtype == np.float32
    assert x.long().tolist() == [[1, 2]]
    assert np.asarray(x.cpu()).shape == (1, 2)
    with pytest.raises(RuntimeError, match="detach"):
        mg.ones(2, device=device, requires_grad=True).numpy()


def test_cast_is_differentiable():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x.double() * 2).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2, 2])


def test_repr():
    assert repr(mg.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(mg.ones(2, requires_grad=True))
    assert "dtype=float64" in repr(mg.ones(2, dtype="float64"))
    assert "grad_fn=<Mul>" in repr(mg.ones(2, requires_grad=True) * 2)


def test_comparisons_and_logic(device):
    x = mg.tensor([1.0, 2.0, 3.0], device=device)
    assert (x > 1.5).tolist() == [False, True, True]
    assert (x == mg.tensor([1.0, 0.0, 3.0], device=device)).tolist() == [True, False, True]
    assert ((x > 1) & (x < 3)).tolist() == [False, True, False]
    assert (~(x > 1)).tolist() == [True, False, False]
    assert bool((x > 0).all()) and not bool((x > 5).any())
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x > 1)
    assert hash(x) == hash(x)  # tensors stay usable as dict keys despite __eq__


def test_inplace_rules(device):
    w = mg.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w -= 1
    with pytest.raises(RuntimeError, match="in-place"):
        w.add_(1)
    with mg.no_grad():
        w -= 0.5
        w.mul_(2)
    assert w.tolist() == [1.0, 1.0, 1.0] and w.requires_grad and w.is_leaf
    h = w * 1
    h += 1  # a non-leaf: recorded out of place
    h.sum().backward()
    assert w.grad.tolist() == [1, 1, 1]
    c = mg.zeros(2, 2, device=device)
    c[0, 1] = 5.0
    c[1] = mg.tensor([1.0, 2.0], device=device)
    assert c.tolist() == [[0, 5], [1, 2]]
    c.zero_()
    assert c.tolist() == [[0, 0], [0, 0]]


def test_data_and_array_setters_validate(device):
    p = mg.ones(3, device=device, requires_grad=True)
    d = p.data
    assert not d.requires_grad and d.array is p.array
    with pytest.raises(ValueError, match="shape"):
        p.data = mg.ones(4, device=device)
    with pytest.raises(ValueError, match="shape"):
        p.array = p.array[:2]
    with pytest.raises(ValueError, match="grad has shape"):
        p.grad = mg.ones(2, device=device)
    with pytest.raises(TypeError, match="grad has dtype"):
        p.grad = mg.ones(3, dtype="float64", device=device)


def test_default_device_context():
    assert mg.get_default_device() == "cpu"
    with mg.device("cpu") as d:
        assert d == mg.get_default_device()
    assert mg.Device("cuda") == "cuda:0"
    assert str(mg.Device("cuda:1")) == "cuda:1"
    with pytest.raises(ValueError):
        mg.Device("cuda:x")


def test_len_iter_index(device):
    x = mg.arange(6, device=device).reshape(2, 3)
    assert len(x) == 2
    assert [r.tolist() for r in x] == [[0, 1, 2], [3, 4, 5]]
    assert [10, 20, 30][mg.tensor(1)] == 20
    with pytest.raises(TypeError):
        len(mg.tensor(1.0))


def test_set_default_dtype():
    try:
        mg.set_default_dtype("float64")
        assert mg.tensor([1.0]).dtype == np.float64 and mg.randn(2).dtype == np.float64
    finally:
        mg.set_default_dtype("float32")
    with pytest.raises(TypeError, match="floating"):
        mg.set_default_dtype("int32")


def test_threads():
    n = mg.get_num_threads()
    assert n >= 1
    mg.set_num_threads(1)
    assert mg.get_num_threads() == 1
    mg.set_num_threads(n)
    with pytest.raises(ValueError):
        mg.set_num_threads(0)


def test_every_result_holds_an_array(device):
    # NumPy reductions to 0-d give scalars; tensors must still hold arrays
    x = mg.randn(3, device=device, requires_grad=True)
    array_type = type(x.array)
    for out in (x.sum(), x.var(), x @ x, x.max()):
        assert type(out.array) is array_type and out.shape == ()
    (x @ x).backward()
    s = mg.tensor(2.0, device=device, requires_grad=True)
    (s * s).sum().backward()  # s is used twice: its gradient is accumulated
    assert type(s.grad.array) is array_type
    with mg.no_grad():
        total = x.sum()
        total += 1  # in place on a 0-d result works


def test_deepcopy_and_pickle_keep_the_device(device):
    import copy
    import pickle

    from minigrad import nn

    lin = nn.Linear(3, 2).to(device)
    lin(mg.ones(1, 3, device=device)).sum().backward()
    twin = copy.deepcopy(lin)
    assert twin.weight is not lin.weight and isinstance(twin.weight, nn.Parameter)
    assert twin.weight.backend is lin.weight.backend
    assert twin.weight.grad is not None and twin.weight.grad.array is not lin.weight.grad.array
    out = twin(mg.ones(1, 3, device=device)) + lin(mg.ones(1, 3, device=device))  # same device: no error
    assert out.shape == (1, 2)
    back = pickle.loads(pickle.dumps(lin.weight))
    assert isinstance(back, nn.Parameter) and back.requires_grad and back.backend is lin.weight.backend
    np.testing.assert_array_equal(back.detach().cpu().numpy(), lin.weight.detach().cpu().numpy())
    with pytest.raises(RuntimeError, match="leaf"):
        copy.deepcopy(lin.weight * 2)
