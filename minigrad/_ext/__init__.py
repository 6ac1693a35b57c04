"""Compiled extension modules (Cython): the autograd engine and the CPU kernels."""
