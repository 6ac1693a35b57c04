"""Population statistics for Batch Normalization: the paper's Algorithm 2, steps 8–11 ("precise BN").

During training each BN layer keeps running averages of its batch
statistics, ``running = (1 - momentum)·running + momentum·batch``. They
lag behind the weights (early in training) and follow the last few
batches (with a large momentum). Algorithm 2 of Ioffe & Szegedy (2015)
instead fixes the trained network and averages over K training
mini-batches B of size m:

    E[x]   ← E_B[μ_B]
    Var[x] ← m/(m − 1) · E_B[σ²_B]

(σ²_B the biased batch variance; m/(m − 1) makes the estimate unbiased).
``recompute_statistics`` does this for every ``BatchNorm1d``/``BatchNorm2d``
of a model (PyTorch's ``torch.optim.swa_utils.update_bn`` does the same
with a cumulative average).
"""

from __future__ import annotations

from ..autograd import no_grad
from .._ext._engine import TensorBase
from ..nn.module import Module
from .batchnorm import _BatchNorm

__all__ = ["recompute_statistics"]


def _input(batch, index):
    """The model input of one element of ``batches``: a Tensor, or the first item of a tuple/list."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(x, TensorBase):
        raise TypeError(f"recompute_statistics: batch {index} must be a Tensor or a tuple/list whose first item is "
                        f"the input Tensor (as a DataLoader gives), got {type(x).__name__}")
    return x


def recompute_statistics(model: Module, batches, *, max_batches: int | None = None) -> int:
    """Set every BatchNorm layer's ``running_mean``/``running_var`` from training mini-batches (Algorithm 2).

    For each ``BatchNorm1d``/``BatchNorm2d`` with running statistics, over
    the K batches given (each of the same shape, m values per channel:
    m = N for (N, C) inputs, N·L or N·H·W otherwise):

        running_mean ← (1/K)·Σ_B μ_B
        running_var  ← m/(m − 1) · (1/K)·Σ_B σ²_B

    where μ_B and σ²_B (biased) are the statistics of the layer's input on
    batch B, computed by the network in training mode (each BN before it
    normalizing with its batch statistics, as in training). Nothing that
    training uses changes: weights, ``momentum``, ``num_batches_tracked``
    and every module's train/eval mode are as before, and no gradient is
    recorded. Layers without running statistics
    (``track_running_stats=False``) are left alone.

    Args:
        model: the network (any Module).
        batches: an iterable of inputs: Tensors, or tuples/lists whose first
            item is the input (a ``DataLoader`` of ``(x, y)`` works as is).
        max_batches: use at most this many batches (K); default: all.

    Returns:
        K, the number of batches averaged.

    Raises:
        ValueError: no batches, batches of different shapes (Algorithm 2
            averages over mini-batches of one size m; use
            ``drop_last=True``), or a batch of one value per channel.
        TypeError: a batch is not a Tensor (or a tuple starting with one).

    Example::

        loader = DataLoader(TensorDataset(x_train, y_train), batch_size=60, shuffle=True, drop_last=True)
        k = minigrad.norm.recompute_statistics(model, loader, max_batches=100)
        model.eval()      # now normalizes with the population statistics
    """
    if max_batches is not None and (not isinstance(max_batches, int) or isinstance(max_batches, bool)
                                    or max_batches < 1):
        raise ValueError(f"recompute_statistics: max_batches must be a positive int or None, got {max_batches!r}")
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m, m.running_mean.array.copy(), m.running_var.array.copy(), m.num_batches_tracked.array.copy(),
              m.momentum) for m in layers]
    sums = None
    count, shape = 0, None
    try:
        model.train()
        # momentum 1: after a batch, each layer's running buffers hold exactly that batch's μ_B and
        # m/(m-1)·σ²_B, computed by the layer's own kernels; they are summed in float64 here.
        for m in layers:
            m.momentum = 1.0
        with no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and count == max_batches:
                    break
                x = _input(batch, i)
                if shape is None:
                    shape = tuple(x.shape)
                    if not shape or shape[0] == 0:
                        raise ValueError(f"recompute_statistics: batch {i} of shape {shape} holds no examples")
                elif tuple(x.shape) != shape:
                    raise ValueError(
                        f"recompute_statistics: batch {i} has shape {tuple(x.shape)} but batch 0 has {shape}; "
                        f"Algorithm 2 averages over mini-batches of one size m (a DataLoader with drop_last=True "
                        f"gives them)")
                model(x)
                stats = [(m.running_mean.array.astype("float64"), m.running_var.array.astype("float64"))
                         for m in layers]
                sums = stats if sums is None else [(a + mu, b + var) for (a, b), (mu, var) in zip(sums, stats)]
                count += 1
        if count == 0:
            raise ValueError("recompute_statistics: no batches to compute the statistics from")
    except BaseException:
        for m, mean, var, _, _ in saved:
            m.running_mean.array[...] = mean
            m.running_var.array[...] = var
        raise
    finally:
        for m, _, _, tracked, momentum in saved:
            m.num_batches_tracked.array[...] = tracked
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode
    # Every batch had the same m, so the mean of the unbiased m/(m-1)·σ²_B is m/(m-1) times the mean of σ²_B.
    for m, (mean_sum, var_sum) in zip(layers, sums):
        m.running_mean.array[...] = mean_sum / count
        m.running_var.array[...] = var_sum / count
    return count
