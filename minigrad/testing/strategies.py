"""Hypothesis strategies for minigrad tensors (public, for plugin authors too).

Values are drawn from well-conditioned ranges by default (finite, moderate
magnitude), which is what finite-difference gradient checks need.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..cuda import is_available
from ..tensor import tensor

__all__ = ["shapes", "arrays", "tensors", "devices", "available_devices", "broadcastable_pair",
           "float_dtypes"]


def available_devices() -> list[str]:
    """Devices usable on this machine: always "cpu", plus "cuda" when a GPU and CuPy are present."""
    return ["cpu", "cuda"] if is_available() else ["cpu"]


def devices() -> st.SearchStrategy[str]:
    """One of the available devices."""
    return st.sampled_from(available_devices())


def float_dtypes() -> st.SearchStrategy[np.dtype]:
    """float32 or float64."""
    return st.sampled_from([np.dtype("float32"), np.dtype("float64")])


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=5) -> st.SearchStrategy[tuple]:
    """Array shapes."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_pair(max_dims=3, max_side=4) -> st.SearchStrategy[tuple[tuple, tuple]]:
    """Two shapes that broadcast together (including size-1 and missing leading axes)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims, max_side=max_side).map(
        lambda r: tuple(r.input_shapes)
    )


def arrays(shape, dtype="float64", low=-3.0, high=3.0, min_magnitude=0.0) -> st.SearchStrategy[np.ndarray]:
    """NumPy arrays with finite values in ``[low, high]`` and ``|x| >= min_magnitude``.

    ``min_magnitude`` keeps values away from zero (for division, log of |x|,
    kinks of abs/relu) so finite differences stay on one side.
    """
    dtype = np.dtype(dtype)
    width = 32 if dtype == np.float32 else 64
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    if min_magnitude > 0:
        elements = elements.filter(lambda v: abs(v) >= min_magnitude)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def tensors(draw, shape=None, dtype="float64", device="cpu", requires_grad=True, low=-3.0, high=3.0,
            min_magnitude=0.0):
    """minigrad Tensors (``shape`` may be a tuple or a strategy of shapes)."""
    if shape is None:
        shape = shapes()
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    data = draw(arrays(shape, dtype, low, high, min_magnitude))
    return tensor(data, device=device, requires_grad=requires_grad)
