"""Seeding of minigrad's random number generators.

Each backend has its own generator; ``manual_seed`` re-seeds all of them
(and the ones created later), so a seeded program is reproducible on a
given device.
"""

from __future__ import annotations

import secrets

__all__ = ["manual_seed", "initial_seed", "seed"]

_initial_seed = secrets.randbits(63)


def manual_seed(seed: int) -> None:
    """Seed the generators of every backend (current and future) with ``seed``."""
    global _initial_seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    _initial_seed = seed
    from .backends import loaded_backends

    for backend in loaded_backends():
        backend.manual_seed(seed)


def seed() -> int:
    """Seed every generator from a fresh random value and return it."""
    value = secrets.randbits(63)
    manual_seed(value)
    return value


def initial_seed() -> int:
    """The seed last given to ``manual_seed`` (or drawn at import)."""
    return _initial_seed
