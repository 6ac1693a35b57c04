"""Shared by the compatibility scripts: run the same code with ``torch`` being PyTorch or minigrad."""

import numpy as np
import pytest

import minigrad


def torch_and_batch(shape, classes=10):
    """PyTorch (skipping the test without it), seeded, and a float64 batch of ``shape`` with class labels."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return torch, rng.standard_normal(shape), rng.integers(0, classes, shape[0])


def to_minigrad(torch_state_dict):
    """A PyTorch state dict as NumPy arrays, for minigrad's ``load_state_dict``."""
    return {k: v.detach().cpu().numpy() for k, v in torch_state_dict.items()}


def same_weights(torch_model, mg_model):
    """Copy PyTorch's (randomly initialised) weights into the minigrad twin."""
    mg_model.load_state_dict(to_minigrad(torch_model.state_dict()))


def assert_same_state(torch_model, mg_model, rtol=1e-9, atol=1e-12):
    """Every parameter and buffer agrees (names, shapes and values)."""
    theirs = torch_model.state_dict()
    ours = mg_model.state_dict()
    assert list(ours) == list(theirs)
    for k in theirs:
        np.testing.assert_allclose(ours[k].numpy(), theirs[k].detach().numpy(), rtol=rtol, atol=atol, err_msg=k)


def assert_same_grads(torch_model, mg_model, rtol=1e-9, atol=1e-12):
    """Every parameter's gradient agrees."""
    for (name, tp), (_, p) in zip(torch_model.named_parameters(), mg_model.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


def numpy(t):
    """Values of a PyTorch or minigrad tensor."""
    return t.detach().cpu().numpy() if not isinstance(t, minigrad.Tensor) else t.detach().numpy()
