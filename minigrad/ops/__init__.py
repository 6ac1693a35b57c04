"""Differentiable primitives, grouped by kind.

Each module defines ``Function`` subclasses (forward/backward on raw backend
arrays) and the plain functions users call; ``minigrad.Tensor``'s methods
and ``minigrad.nn.functional`` are thin wrappers over these functions.
"""

from .conv import conv2d
from .elementwise import (abs, add, cast, clamp, div, dropout_mask_mul, erf, exp, log, maximum, minimum,
                          mul, neg, pow, relu, sigmoid, softplus, sqrt, sub, tanh, where)
from .linalg import linear, matmul, vector_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .reduce import amax, amin, argmax, argmin, logsumexp, max, mean, min, std, sum, sum_to, var
from .shape import (broadcast_to, concatenate, flatten, getitem, permute, reshape, squeeze, stack,
                    transpose, unsqueeze)
from .softmax import cross_entropy, log_softmax, nll_loss, softmax

__all__ = [
    "abs", "adaptive_avg_pool2d", "add", "amax", "amin", "argmax", "argmin", "avg_pool2d", "broadcast_to", "cast", "clamp", "concatenate",
    "conv2d", "cross_entropy", "div", "dropout_mask_mul", "erf", "exp", "flatten", "getitem", "linear", "log",
    "log_softmax", "logsumexp", "matmul", "max", "max_pool2d", "maximum", "mean", "min", "minimum", "mul",
    "neg", "nll_loss", "permute", "pow", "relu", "reshape", "sigmoid", "softmax", "softplus", "sqrt", "squeeze",
    "stack", "std", "sub", "sum", "sum_to", "tanh", "transpose", "unsqueeze", "var", "vector_norm", "where", "cat",
]

cat = concatenate
