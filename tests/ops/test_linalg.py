"""matmul (all of NumPy's shape rules) and the fused linear."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad.testing import gradcheck
from minigrad.testing.strategies import arrays


@st.composite
def matmul_shapes(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["mm", "mv", "vm", "vv", "batched", "broadcast"]))
    if kind == "mm":
        return (n, k), (k, m)
    if kind == "mv":
        return (n, k), (k,)
    if kind == "vm":
        return (k,), (k, m)
    if kind == "vv":
        return (k,), (k,)
    b = draw(st.integers(1, 3))
    if kind == "batched":
        return (b, n, k), (b, k, m)
    return (2, 1, n, k), (b, k, m)


@given(shapes=matmul_shapes(), data=st.data())
def test_matmul(shapes, data, device):
    sa, sb = shapes
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    x = mg.tensor(a, device=device, requires_grad=True)
    y = mg.tensor(b, device=device, requires_grad=True)
    np.testing.assert_allclose((x @ y).detach().cpu().numpy(), a @ b, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda p, q: p @ q, [x, y])


@given(data=st.data(), bias=st.booleans(), lead=st.sampled_from([(), (3,), (2, 3)]))
def test_linear(data, bias, lead, device):
    fin, fout = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    x = mg.tensor(data.draw(arrays(lead + (fin,))), device=device, requires_grad=True)
    w = mg.tensor(data.draw(arrays((fout, fin))), device=device, requires_grad=True)
    b = mg.tensor(data.draw(arrays((fout,))), device=device, requires_grad=True) if bias else None
    expected = x.detach().cpu().numpy() @ w.detach().cpu().numpy().T + (b.detach().cpu().numpy() if bias else 0)
    np.testing.assert_allclose(mg.ops.linear(x, w, b).detach().cpu().numpy(), expected, rtol=1e-12, atol=1e-12)
    inputs = [x, w] + ([b] if bias else [])
    assert gradcheck(lambda *t: mg.ops.linear(*t), inputs)


def test_matmul_shape_errors(device):
    with pytest.raises(ValueError, match="do not align"):
        mg.ones(2, 3, device=device) @ mg.ones(2, 3, device=device)
    with pytest.raises(ValueError, match="features"):
        mg.ops.linear(mg.ones(2, 3, device=device), mg.ones(4, 2, device=device))
