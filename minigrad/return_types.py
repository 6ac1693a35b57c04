"""Named tuples returned by operations with several results, as PyTorch's ``torch.return_types``.

``values, indices = minigrad.max(x, dim=1)`` unpacks like a tuple, and the
fields can be read by name: ``minigrad.max(x, 1).indices``.
"""

from collections import namedtuple

__all__ = ["max", "min"]

max = namedtuple("max", ["values", "indices"])
max.__doc__ = "``(values, indices)`` of ``minigrad.max(input, dim)``: the maxima along ``dim`` and where they are."

min = namedtuple("min", ["values", "indices"])
min.__doc__ = "``(values, indices)`` of ``minigrad.min(input, dim)``: the minima along ``dim`` and where they are."
