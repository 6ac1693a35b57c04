"""Linear algebra in PyTorch's ``torch.linalg`` names: ``vector_norm``.

Example::

    import minigrad
    x = minigrad.randn(8, 3, requires_grad=True)
    minigrad.linalg.vector_norm(x, dim=1)        # one Euclidean norm per row, shape (8,)
"""

from __future__ import annotations

from .ops.linalg import vector_norm

__all__ = ["vector_norm"]
