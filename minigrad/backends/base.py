"""The backend interface and its reference implementation.

A ``Backend`` is one object per device. It owns

* array creation and transfer (``asarray``, ``to_numpy``, ``from_numpy``),
* the array namespace ``xp`` (NumPy or CuPy) used by every Function for
  generic math,
* random number generation (``manual_seed``, ``standard_normal``, ...),
* the fused kernels: the normalization pairs, im2col/col2im, pooling and a
  few fused elementwise/optimizer updates.

Every kernel here is written once against ``xp`` and is the reference the
compiled overrides are tested against (and the fallback for a backend that
does not override it). Subclasses override only what they make faster and
must keep the signatures (``tests/backends/test_backend_api.py`` checks it).

Conventions: kernels take and return raw arrays of the backend; per-channel
kernels work on a canonical ``(N, C, S)`` view and per-row kernels on an
``(R, K)`` view; statistics are accumulated in float64 and returned in the
input's accumulation dtype (``minigrad._dtypes.accumulation_dtype``:
float32 for float32 and half inputs, float64 for float64), as are the
parameter gradients; outputs and input gradients have the input's dtype.
A half (float16, bfloat16) input may come with float32 or half
per-channel vectors. Arguments arrive validated and non-empty: the public
entry points check them once, above the backends, before any kernel runs
(docs/architecture.md), so a backend only computes.
"""

from __future__ import annotations

import numpy as np

from .. import random as _random
from .._dtypes import accumulation_dtype, is_floating

__all__ = ["Backend"]


class Backend:
    """Reference backend: every kernel written against the namespace ``xp``."""

    #: Short name of the device kind ("cpu", "cuda").
    name = "base"
    #: The array namespace (``numpy`` or ``cupy``).
    xp = np

    def __init__(self, device):
        self.device = device
        self._rng = None
        self._seed = None
        _random.follow(self)  # minigrad.manual_seed re-seeds this backend's generator

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device}>"

    #: ``device -> backend object``: ``minigrad.backends.get_backend``, set by that package (the
    #: registry, one layer up) when it loads, so pickles refer to it without this module importing it.
    _lookup = None

    # A backend is a per-device singleton: copying or unpickling a tensor
    # must give back the same object, or the copy would look like it lives
    # on "another" device.
    def __reduce__(self):
        return type(self)._lookup, (str(self.device),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    @classmethod
    def is_available(cls) -> bool:
        """Whether this kind of backend can be used on this machine."""
        return True

    @classmethod
    def create(cls, device) -> "Backend":
        """Build the backend for ``device``; raises a clear error if it cannot run here."""
        return cls(device)

    # ------------------------------------------------------------ memory
    def asarray(self, data, dtype=None):
        """Convert ``data`` (nested lists, scalars, host arrays, this backend's arrays) to a backend array.

        No copy where none is needed: a host array stays itself on a backend
        whose arrays live in host memory.
        """
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """Return the array on the host (no copy where none is needed)."""
        return np.asarray(array)

    def from_numpy(self, array: np.ndarray):
        """Copy a host array to this backend's device (always a new array)."""
        return self.xp.array(array, copy=True)

    def is_array(self, obj) -> bool:
        """Whether ``obj`` is an array of this backend's kind (``xp.ndarray``), as opposed to host data."""
        return isinstance(obj, self.xp.ndarray)

    def transfer(self, array, source: "Backend"):
        """Copy an array of backend ``source`` to this backend's device."""
        return self.from_numpy(source.to_numpy(array))

    def synchronize(self) -> None:
        """Wait for all queued work on the device (a no-op on the CPU)."""

    # ------------------------------------------------------------ random
    def manual_seed(self, seed: int) -> None:
        """Re-seed this backend's generator."""
        self._seed = int(seed)
        self._rng = self.xp.random.default_rng(self._seed)

    @property
    def rng(self):
        """The backend's random generator (seeded lazily from ``manual_seed``)."""
        if self._rng is None:
            self.manual_seed(_random.initial_seed())
        return self._rng

    def standard_normal(self, shape, dtype):
        """Samples from N(0, 1) in any floating ``dtype``."""
        return self.rng.standard_normal(shape, dtype=_sampled(dtype)).astype(dtype, copy=False)

    def uniform(self, shape, low, high, dtype):
        """Samples from U[low, high) in any floating ``dtype``."""
        out = self._unit_uniform(shape, dtype)
        if low != 0.0 or high != 1.0:
            out *= high - low
            out += low
        return out

    def _unit_uniform(self, shape, dtype):
        # Samples from U[0, 1): the one call that differs between generators.
        return self.rng.random(shape, dtype=_sampled(dtype)).astype(dtype, copy=False)

    def randint(self, low, high, shape, dtype):
        """Integers in [low, high)."""
        return self.rng.integers(low, high, size=shape, dtype=dtype)

    def permutation(self, n):
        """A random permutation of ``range(n)`` (int64)."""
        return self.rng.permutation(n)

    # ------------------------------------------- per-channel normalization
    def batch_norm_forward_train(self, x, weight, bias, eps):
        """Training batch norm on an ``(N, C, S)`` view.

        Statistics per channel over N·S: ``mean`` and the *biased* ``var``;
        ``y = weight·(x - mean)/sqrt(var + eps) + bias`` (``weight``/``bias``
        may be None). Returns ``(y, mean, var)``: y in ``x.dtype``, the
        statistics in its accumulation dtype.
        """
        xp = self.xp
        xd = x.astype(xp.float64, copy=False)
        mean = xd.mean(axis=(0, 2))
        centered = xd - mean[None, :, None]
        var = (centered * centered).mean(axis=(0, 2))  # two passes: no E[x²]-E[x]²
        scale = 1.0 / xp.sqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        y = centered * scale[None, :, None]
        if bias is not None:
            y += bias[None, :, None]
        acc = accumulation_dtype(x.dtype)
        return y.astype(x.dtype, copy=False), mean.astype(acc), var.astype(acc)

    def channel_affine(self, x, scale, shift):
        """``y = x·scale[c] + shift[c]`` on an ``(N, C, S)`` view (inference BN)."""
        return x * scale[None, :, None] + shift[None, :, None]

    def batch_norm_forward_eval(self, x, mean, var, weight, bias, eps):
        """Inference batch norm on an ``(N, C, S)`` view with fixed statistics (the running ones).

        ``y = x·scale[c] + shift[c]`` with ``scale = weight/sqrt(var + eps)`` and
        ``shift = bias - mean·scale`` (``weight``/``bias`` may be None): one
        multiply-add per value. Returns ``y`` in ``x.dtype``.
        """
        scale, shift = self.batch_norm_eval_affine(mean, var, weight, bias, eps)
        acc = accumulation_dtype(x.dtype)  # a half x: one rounding of a float32 multiply-add
        y = x.astype(acc, copy=False) * scale.astype(acc)[None, :, None] + shift.astype(acc)[None, :, None]
        return y.astype(x.dtype, copy=False)

    def batch_norm_eval_affine(self, mean, var, weight, bias, eps):
        """Inference batch norm as one multiply-add per value, ``y = x·scale[c] + shift[c]``.

        Returns float64 ``(scale, shift)`` of shape ``(C,)``: ``scale =
        weight/sqrt(var + eps)``, ``shift = bias - mean·scale`` (``weight``/
        ``bias`` may be None). The eval kernels and the folding of BN into
        the preceding layer both start from it.
        """
        xp = self.xp
        scale = 1.0 / xp.sqrt(var.astype(xp.float64) + eps)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        return scale, shift

    def cross_entropy_forward(self, x, target, ignore_index):
        """Cross-entropy of logits ``x`` (N, C) with integer ``target`` (N,), no class weights.

        Returns ``(total, count, probs)``: the summed loss ``Σ log Σ_j e^{x_ij} - x_i,target_i`` over
        the ``count`` rows whose target is not ``ignore_index`` (numbers or 0-d arrays: the device
        need not wait), and the softmax of every row (N, C), which ``cross_entropy_backward`` takes.
        """
        xp = self.xp
        shifted = x - x.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        valid = target != ignore_index
        rows = xp.arange(x.shape[0])
        picked = shifted[rows, xp.where(valid, target, 0)]
        total = ((xp.log(s[:, 0]) - picked) * valid).sum()
        return total, valid.sum(), e / s

    def cross_entropy_backward(self, probs, target, ignore_index, scale):
        """``scale·(probs - onehot(target))`` per row, zero for the rows whose target is ``ignore_index``."""
        xp = self.xp
        valid = target != ignore_index
        dx = probs * (scale * valid[:, None]).astype(probs.dtype)
        rows = xp.arange(probs.shape[0])[valid]
        dx[rows, target[valid]] -= scale
        return dx

    def batch_norm_update_stats(self, running_mean, running_var, mean, var, factor, unbias):
        """Fold one batch's statistics into running ones, in place: ``running ← (1 - factor)·running +
        factor·batch``, the batch variance entering as ``var·unbias`` (m/(m - 1): the unbiased one).

        All four are ``(C,)`` arrays; the batch statistics may be wider than the running ones (float32
        statistics of a half input), the result is rounded to the running statistics' dtype.
        """
        running_mean *= 1.0 - factor
        running_mean += (factor * mean).astype(running_mean.dtype, copy=False)
        running_var *= 1.0 - factor
        running_var += ((factor * unbias) * var).astype(running_var.dtype, copy=False)

    def batch_norm_backward(self, grad, x, mean, invstd, weight, training):
        """Gradients of batch norm on an ``(N, C, S)`` view.

        With ``x̂ = (x - mean)·invstd``: ``dbias = Σ grad``, ``dweight = Σ grad·x̂``
        (per channel, over N·S) and, when ``training`` (batch statistics, so
        mean and invstd depend on x),
        ``dx = weight·invstd·(grad - dbias/m - x̂·dweight/m)`` with m = N·S;
        with fixed (running) statistics ``dx = weight·invstd·grad``.
        Returns ``(dx, dweight, dbias)``: dx in ``x.dtype``, the others in
        its accumulation dtype.
        """
        xp = self.xp
        gd = grad.astype(xp.float64, copy=False)
        xhat = (x.astype(xp.float64) - mean[None, :, None]) * invstd[None, :, None]
        dbias = gd.sum(axis=(0, 2))
        dweight = (gd * xhat).sum(axis=(0, 2))
        scale = invstd.astype(xp.float64)
        if weight is not None:
            scale = scale * weight
        if training:
            m = x.shape[0] * x.shape[2]
            dx = (gd - dbias[None, :, None] / m - xhat * (dweight / m)[None, :, None]) * scale[None, :, None]
        else:
            dx = gd * scale[None, :, None]
        acc = accumulation_dtype(x.dtype)
        return dx.astype(x.dtype, copy=False), dweight.astype(acc), dbias.astype(acc)

    # --------------------------------------------- per-group normalization
    def group_norm_forward(self, x, weight, bias, groups, eps):
        """Group normalization with its per-channel affine on an ``(N, C, S)`` view.

        The C channels form ``groups`` runs of C/groups consecutive channels;
        each (sample, group) row of (C/groups)·S values gets its own mean and
        biased variance, and ``y = weight[c]·(x - mean)/sqrt(var + eps) + bias[c]``
        (``weight``/``bias`` of shape (C,), or None). Returns
        ``(y, mean, invstd)``, the statistics of shape ``(N, groups)`` in the
        accumulation dtype.
        GroupNorm is this view; LayerNorm is ``(R, K, 1)`` with ``groups=1``
        (its affine per element), InstanceNorm ``(N, C, S)`` with ``groups=C``.
        """
        xp = self.xp
        n, c, s = x.shape
        xd = x.astype(xp.float64, copy=False).reshape(n, groups, (c // groups) * s)
        mean = xd.mean(axis=2)
        centered = xd - mean[..., None]
        var = (centered * centered).mean(axis=2)  # two passes: no E[x²]-E[x]²
        invstd = 1.0 / xp.sqrt(var + eps)
        y = (centered * invstd[..., None]).reshape(n, c, s)
        if weight is not None:
            y = y * weight[None, :, None]
        if bias is not None:
            y = y + bias[None, :, None]
        acc = accumulation_dtype(x.dtype)
        return y.astype(x.dtype, copy=False), mean.astype(acc), invstd.astype(acc)

    def group_norm_backward(self, grad, x, mean, invstd, weight, groups):
        """Gradients of ``group_norm_forward`` on an ``(N, C, S)`` view.

        With ``x̂ = (x - mean)·invstd`` per row and ``dx̂ = weight[c]·grad``:
        ``dbias = Σ grad``, ``dweight = Σ grad·x̂`` (per channel, over samples
        and S) and ``dx = invstd·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂))`` with the
        means over each row. ``weight`` may be None (γ = 1). Returns
        ``(dx, dweight, dbias)``: dx in ``x.dtype``, the others in its
        accumulation dtype.
        """
        xp = self.xp
        n, c, s = x.shape
        rows = (n, groups, (c // groups) * s)
        gd = grad.astype(xp.float64, copy=False).reshape(n, c, s)
        inv = invstd.astype(xp.float64)[..., None]
        xhat = (x.astype(xp.float64).reshape(rows) - mean.astype(xp.float64)[..., None]) * inv
        dbias = gd.sum(axis=(0, 2))
        dweight = (gd * xhat.reshape(n, c, s)).sum(axis=(0, 2))
        dxhat = (gd * weight[None, :, None] if weight is not None else gd).reshape(rows)
        dx = (dxhat - dxhat.mean(axis=2, keepdims=True) - xhat * (dxhat * xhat).mean(axis=2, keepdims=True)) * inv
        acc = accumulation_dtype(x.dtype)
        return dx.reshape(n, c, s).astype(x.dtype, copy=False), dweight.astype(acc), dbias.astype(acc)

    # ---------------------------------------------------- matrix products
    def matmul(self, a, b):
        """Matrix product with NumPy's rules (1-D operands, batch broadcasting): ``a @ b``.

        Two operands of one dtype give that dtype: NumPy multiplies bfloat16 (ml_dtypes) in float32 and
        returns float32; the result is rounded back, as PyTorch's bfloat16 products are."""
        out = a @ b
        return out.astype(a.dtype) if out.dtype != a.dtype and a.dtype == b.dtype else out

    # ---------------------------------------------------- convolution
    @staticmethod
    def conv_output_size(size, k, stride, pad, dilation=1, ceil_mode=False):
        """Output length of a sliding window (PyTorch's rule; 0 when the window does not fit).

        ``(size + 2·pad - dilation·(k - 1) - 1) / stride + 1``, rounded down, or
        up with ``ceil_mode`` (then a last window that would start in the
        right padding is dropped).
        """
        span = size + 2 * pad - dilation * (k - 1) - 1
        if span < 0:
            return 0
        out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
        if ceil_mode and (out - 1) * stride >= size + pad:
            out -= 1
        return out

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """Unfold ``x`` (N, C, H, W) into columns (N, C·kh·kw, OH·OW).

        Row ``c·kh·kw + i·kw + j`` holds input pixel ``(c, oh·sh + i·dh - ph, ow·sw + j·dw - pw)``
        for output position ``oh·OW + ow`` (zero outside the image).
        """
        xp = self.xp
        n, c, h, w = x.shape
        oh = self.conv_output_size(h, kh, sh, ph, dh)
        ow = self.conv_output_size(w, kw, sw, pw, dw)
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
        cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xpad[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
        return cols.reshape(n, c * kh * kw, oh * ow)

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """Adjoint of ``im2col``: sum columns back into an (N, C, H, W) array."""
        xp = self.xp
        n, c, h, w = x_shape
        oh = self.conv_output_size(h, kh, sh, ph, dh)
        ow = self.conv_output_size(w, kw, sw, pw, dw)
        cols = cols.reshape(n, c, kh, kw, oh, ow)
        out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw] += cols[:, :, i, j]
        return out[:, :, ph : ph + h, pw : pw + w]

    def conv2d_forward(self, x, weight, bias, stride, padding, dilation, groups):
        """2-D cross-correlation of ``x`` (N, C, H, W) with ``weight`` (O, C/groups, kh, kw) plus ``bias``.

        ``stride``, ``padding`` (symmetric, zeros) and ``dilation`` are pairs;
        the channels form ``groups`` independent blocks. Returns ``(y, saved)``:
        y (N, O, OH, OW) and what ``conv2d_backward`` needs besides the input's
        shape and the weight (here the columns of ``im2col``).
        """
        xp = self.xp
        n, c, h, w = x.shape
        o, cg, kh, kw = weight.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        oh = self.conv_output_size(h, kh, sh, ph, dh)
        ow = self.conv_output_size(w, kw, sw, pw, dw)
        cols = self.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)                    # (N, C·kh·kw, L)
        w3 = weight.reshape(groups, o // groups, cg * kh * kw)                   # (G, Og, Kg)
        y = self.matmul(w3, cols.reshape(n, groups, cg * kh * kw, oh * ow))      # (N, G, Og, L)
        y = y.reshape(n, o, oh, ow)
        if bias is not None:
            y += bias[None, :, None, None]
        return y, cols

    def conv2d_backward(self, grad, x_shape, weight, saved, stride, padding, dilation, groups, needs):
        """Gradients of ``conv2d_forward`` from ``grad`` (N, O, OH, OW): ``(gx, gw, gb)``, each computed only
        where ``needs`` (three booleans) asks (else None)."""
        xp = self.xp
        n, c, h, w = x_shape
        o, cg, kh, kw = weight.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        kg, og, L = cg * kh * kw, o // groups, grad.shape[2] * grad.shape[3]
        g = grad.reshape(n, groups, og, L)                                      # (N, G, Og, L)
        gx = gw = gb = None
        if needs[0]:
            wt = xp.swapaxes(weight.reshape(groups, og, kg), -1, -2)            # (G, Kg, Og)
            dcols = self.matmul(wt, g).reshape(n, c * kh * kw, L)
            gx = self.col2im(dcols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
        if needs[1]:
            cols = saved.reshape(n, groups, kg, L)
            # Σ over images of (Og, L)·(L, Kg) products (einsum has no bfloat16 loops)
            gw = self.matmul(g, xp.swapaxes(cols, -1, -2)).sum(axis=0).reshape(weight.shape)
        if needs[2]:
            gb = grad.sum(axis=(0, 2, 3))
        return gx, gw, gb

    # -------------------------------------------------------- pooling
    def _pool_geometry(self, x_shape, kh, kw, sh, sw, ph, pw, ceil_mode, out_shape=None):
        """Output size, and the extra right/bottom padding that ceil_mode's last window reaches into."""
        h, w = x_shape[2:]
        if out_shape is None:
            oh = self.conv_output_size(h, kh, sh, ph, 1, ceil_mode)
            ow = self.conv_output_size(w, kw, sw, pw, 1, ceil_mode)
        else:
            oh, ow = out_shape
        eh = max(0, (oh - 1) * sh + kh - h - 2 * ph)
        ew = max(0, (ow - 1) * sw + kw - w - 2 * pw)
        return oh, ow, eh, ew

    def max_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, ceil_mode=False):
        """Max pooling of (N, C, H, W); padding never wins (nor does the part of a ``ceil_mode`` window
        past the input).

        Returns ``(y, argmax)`` where ``argmax`` (int64, shape of y) is the flat
        index ``h·W + w`` of the chosen input pixel in its channel plane (the
        first maximum in window order; a NaN wins).
        """
        xp = self.xp
        n, c, h, w = x.shape
        oh, ow, eh, ew = self._pool_geometry(x.shape, kh, kw, sh, sw, ph, pw, ceil_mode)
        is_float = is_floating(x.dtype)
        lowest = -xp.inf if is_float else xp.iinfo(x.dtype).min
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=lowest)
        y = xp.full((n, c, oh, ow), lowest, dtype=x.dtype)
        arg = xp.full((n, c, oh, ow), -1, dtype=xp.int64)
        rows = xp.arange(oh)[:, None] * sh
        colsi = xp.arange(ow)[None, :] * sw
        for i in range(kh):
            for j in range(kw):
                win = xpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
                inside = ((rows + i - ph >= 0) & (rows + i - ph < h) & (colsi + j - pw >= 0) & (colsi + j - pw < w))
                # the first in-image pixel always wins; later ones if larger, or NaN (propagates)
                better = inside & ((arg < 0) | (win > y) | (xp.isnan(win) if is_float else False))
                y = xp.where(better, win, y)
                flat = (rows + i - ph) * w + (colsi + j - pw)
                arg = xp.where(better, flat, arg)
        return y, arg

    def max_pool2d_backward(self, grad, argmax, x_shape):
        """Scatter ``grad`` to the positions ``argmax`` chose (adds on overlap)."""
        xp = self.xp
        n, c, h, w = x_shape
        dx = xp.zeros((n * c, h * w), dtype=grad.dtype)
        rows = xp.repeat(xp.arange(n * c), argmax.shape[2] * argmax.shape[3])
        xp.add.at(dx, (rows, argmax.reshape(-1)), grad.reshape(-1))
        return dx.reshape(x_shape)

    def _avg_divisor(self, x_shape, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad):
        """PyTorch's divisor of each window, (OH, OW) float64: the window clipped to the padded input
        when ``count_include_pad``, else its pixels inside the input."""
        xp = self.xp
        sizes = []
        for size, out, k, s, p in ((x_shape[2], oh, kh, sh, ph), (x_shape[3], ow, kw, sw, pw)):
            start = xp.arange(out) * s - p
            end = xp.minimum(start + k, size + p)
            sizes.append(end - start if count_include_pad else xp.minimum(end, size) - xp.maximum(start, 0))
        return (sizes[0][:, None] * sizes[1][None, :]).astype(xp.float64)

    def avg_pool2d_forward(self, x, kh, kw, sh, sw, ph, pw, count_include_pad=True, ceil_mode=False):
        """Average pooling of (N, C, H, W) with zero padding.

        The divisor is PyTorch's: the window clipped to the padded input when
        ``count_include_pad``, else the number of its pixels inside the input.
        """
        xp = self.xp
        oh, ow, eh, ew = self._pool_geometry(x.shape, kh, kw, sh, sw, ph, pw, ceil_mode)
        xpad = xp.pad(x.astype(xp.float64), ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)))
        acc = xp.zeros(x.shape[:2] + (oh, ow), dtype=xp.float64)
        for i in range(kh):
            for j in range(kw):
                acc += xpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
        y = acc / self._avg_divisor(x.shape, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad)
        return y.astype(x.dtype, copy=False)

    def avg_pool2d_backward(self, grad, x_shape, kh, kw, sh, sw, ph, pw, count_include_pad=True):
        """Gradient of ``avg_pool2d_forward`` (whose output size, ceil_mode or not, is grad's)."""
        xp = self.xp
        n, c, h, w = x_shape
        oh, ow, eh, ew = self._pool_geometry(x_shape, kh, kw, sh, sw, ph, pw, False, grad.shape[2:])
        g = grad / self._avg_divisor(x_shape, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad)
        dx = xp.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=xp.float64)
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += g
        return dx[:, :, ph : ph + h, pw : pw + w].astype(grad.dtype)

    @staticmethod
    def _adaptive_windows(size, out):
        """PyTorch's adaptive windows: output i averages [floor(i·size/out), ceil((i+1)·size/out))."""
        return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

    def adaptive_avg_pool2d_forward(self, x, oh, ow):
        """Adaptive average pooling of (N, C, H, W) to (N, C, oh, ow)."""
        xp = self.xp
        y = xp.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
        for i, (h0, h1) in enumerate(self._adaptive_windows(x.shape[2], oh)):
            for j, (w0, w1) in enumerate(self._adaptive_windows(x.shape[3], ow)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(xp.float64).mean(axis=(2, 3))
        return y

    def adaptive_avg_pool2d_backward(self, grad, x_shape):
        """Gradient of ``adaptive_avg_pool2d_forward``: each output's gradient spread over its window."""
        xp = self.xp
        dx = xp.zeros(x_shape, dtype=xp.float64)
        oh, ow = grad.shape[2:]
        for i, (h0, h1) in enumerate(self._adaptive_windows(x_shape[2], oh)):
            for j, (w0, w1) in enumerate(self._adaptive_windows(x_shape[3], ow)):
                dx[:, :, h0:h1, w0:w1] += (grad[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
        return dx.astype(grad.dtype)

    # --------------------------------------------- fused elementwise ops
    def relu(self, x):
        """``max(x, 0)`` elementwise (a NaN stays NaN)."""
        return self.xp.maximum(x, 0)

    def relu_backward(self, grad, y):
        """Gradient of ``relu`` from its output ``y``: ``grad`` where ``y > 0``, else 0."""
        return grad * (y > 0)

    def sigmoid(self, x):
        """Logistic function, stable for large |x|: ``0.5·(1 + tanh(x/2))``."""
        xp = self.xp
        y = xp.tanh(x * 0.5)
        y += 1.0
        y *= 0.5
        return y.astype(x.dtype, copy=False)  # bfloat16 times a Python float is float32 in NumPy

    def sigmoid_backward(self, grad, y):
        """Gradient of ``sigmoid`` from its output ``y``: ``grad·y·(1 - y)``."""
        return grad * (y * (1 - y))

    def erf(self, x):
        """The error function ``erf(x) = 2/√π·∫₀ˣ exp(-t²) dt`` elementwise, in ``x.dtype``.

        The reference goes through the host and Python's ``math.erf`` (slow,
        exact to double precision); backends override it with a kernel.
        """
        import math

        host = np.asarray(self.to_numpy(x), dtype=np.float64)
        out = np.vectorize(math.erf, otypes=[np.float64])(host) if host.size else host.copy()
        return self.from_numpy(out.astype(x.dtype, copy=False))

    def sgd_update(self, param, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
        """One in-place SGD step on ``param`` (PyTorch's update rule).

        ``buf`` is the momentum buffer (None before the first step when
        ``momentum`` is non-zero, or when it is zero). Returns the buffer.
        """
        xp = self.xp
        g = grad
        if weight_decay:
            g = g + weight_decay * param
        if momentum:
            if buf is None:
                buf = xp.array(g, copy=True)
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        param -= lr * g
        return buf

    def sgd_update_multi(self, params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov):
        """``sgd_update`` on each parameter of a list, with one group's hyper-parameters; returns the buffers.

        ``params``, ``grads`` and ``bufs`` are lists of equal length (``bufs[i]``
        None where there is no buffer yet). A backend overrides it to update
        all of them in one call (PyTorch's ``foreach`` implementation); this
        one loops.
        """
        return [self.sgd_update(p, g, b, lr, momentum, dampening, weight_decay, nesterov)
                for p, g, b in zip(params, grads, bufs)]

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
        """One in-place Adam step (Kingma & Ba, with bias correction; L2 weight decay)."""
        xp = self.xp
        g = grad
        if weight_decay:
            g = g + weight_decay * param
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * g
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * (g * g)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        denom = xp.sqrt(exp_avg_sq / bc2)
        denom += eps
        param -= (lr / bc1) * (exp_avg / denom)

    def adam_update_multi(self, params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
                          decay=1.0):
        """``adam_update`` on each parameter of a list (``steps[i]``: parameter i's step count); ``decay``
        (AdamW's ``1 - lr·λ``) scales each parameter first. A backend overrides it to update all of them
        in one call; this one loops."""
        for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
            if decay != 1.0:
                p *= decay
            self.adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)

    def index_add(self, target, index, values):
        """``target[index] += values`` with repeated indices accumulated."""
        self.xp.add.at(target, index, values)


def _sampled(dtype):
    """The dtype the generators sample in: ``dtype`` itself, or float32 for the others (float16)."""
    dt = np.dtype(dtype)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
