"""learn2learn's MetaBatchNorm: functional batch_norm on views of per-step running statistics."""

import numpy as np
import pytest

import minigrad


def make_meta_bn(torch, num_features=3, steps=2):
    nn, F = torch.nn, torch.nn.functional

    class MetaBatchNormLayer(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, adaptation_steps=1):
            super().__init__()
            self.num_features, self.eps, self.momentum = num_features, eps, momentum
            self.weight = nn.Parameter(torch.ones(num_features, dtype=torch.float64))
            self.bias = nn.Parameter(torch.zeros(num_features, dtype=torch.float64))
            self.register_buffer("running_mean", torch.zeros(adaptation_steps, num_features, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(adaptation_steps, num_features, dtype=torch.float64))

        def forward(self, input, step):
            # running_mean[step] is a view: batch_norm's in-place update must reach the buffer.
            return F.batch_norm(input, self.running_mean[step], self.running_var[step], self.weight, self.bias,
                                training=True, momentum=self.momentum, eps=self.eps)

    return MetaBatchNormLayer(num_features, adaptation_steps=steps)


def run(torch, layer, xs):
    grads = []
    for step, x in enumerate(xs):
        out = layer(torch.tensor(x), step)
        (out * out * torch.tensor(np.arange(out.shape[1], dtype=np.float64)).reshape(1, -1)).sum().backward()
        grads.append(layer.weight.grad.detach().cpu().numpy().copy())
    return layer.running_mean.detach().cpu().numpy(), layer.running_var.detach().cpu().numpy(), grads


def _inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((5, 3)) * (i + 1) + i for i in range(2)]


def test_running_statistics_views_are_updated_in_place():
    mean, var, _ = run(minigrad, make_meta_bn(minigrad), _inputs())
    assert np.all(mean != 0) and np.all(var != 1)  # both rows of both buffers moved
    x = _inputs()[0]
    np.testing.assert_allclose(mean[0], 0.1 * x.mean(axis=0), rtol=1e-12)


def test_meta_batchnorm_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours = run(minigrad, make_meta_bn(minigrad), _inputs())
    theirs = run(torch, make_meta_bn(torch), _inputs())
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)
    for g, tg in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-12)
