"""Compiled extension modules (Cython): the autograd engine and the CPU kernels.

minigrad's kernels use one OpenMP runtime (libgomp), which reads its
settings once, when the first of these modules loads it. By default an idle
libgomp thread spins for about 300,000 iterations before it sleeps; on a
machine with few cores such spinning threads compete with NumPy's BLAS
threads (which spin too) and with the Python thread, and the seed CNN's
training step ran 2-5 times slower than with short spins (measured on the
2-core development machine; see docs/benchmarks.md). Too short a spin costs
too: a training step of small layers leaves the team idle for tens of
microseconds between products, and waking a sleeping thread took about as
long again (the paper's MLP step: 0.82 ms at 10,000 spins, 0.74 ms at 30,000,
quiet, and faster beside a busy process too). So minigrad loads the
runtime with ``GOMP_SPINCOUNT=30000`` (about 30-60 µs of spinning) unless
the user chose a wait policy (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``;
``MINIGRAD_GOMP_SPINCOUNT`` sets minigrad's value), and removes the
variable again afterwards. PyTorch's CPU wheels ship a libgomp with the same
name, so a PyTorch imported after minigrad shares this runtime and setting
(it measured no slower with it); one imported before keeps its own.
"""

import os

_SPIN = "GOMP_SPINCOUNT"

if "OMP_WAIT_POLICY" not in os.environ and _SPIN not in os.environ:
    os.environ[_SPIN] = os.environ.get("MINIGRAD_GOMP_SPINCOUNT", "30000")
    try:
        from . import _parallel  # noqa: F401  (loads the OpenMP runtime, which reads the setting now)
    finally:
        del os.environ[_SPIN]
