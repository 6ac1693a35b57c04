"""Seeding of minigrad's random number generators.

Each backend has its own generator; ``manual_seed`` re-seeds all of them
(and the ones created later), so a seeded program is reproducible on a
given device.

This module sits below the backends: it holds the seed, and every
``Backend`` enrols itself here when it is created (``follow``), so
``manual_seed`` reaches the generators without knowing what a backend is.
"""

from __future__ import annotations

import secrets
import threading
import weakref

__all__ = ["manual_seed", "initial_seed", "seed", "follow"]

_initial_seed = secrets.randbits(63)
# Objects with a manual_seed(seed) method (the backends), re-seeded by manual_seed.
_followers: "weakref.WeakSet" = weakref.WeakSet()
_lock = threading.Lock()


def manual_seed(seed: int) -> None:
    """Seed the generators of every backend (current and future) with ``seed``."""
    global _initial_seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    _initial_seed = seed
    with _lock:
        followers = list(_followers)
    for owner in followers:
        owner.manual_seed(seed)


def seed() -> int:
    """Seed every generator from a fresh random value and return it."""
    value = secrets.randbits(63)
    manual_seed(value)
    return value


def initial_seed() -> int:
    """The seed last given to ``manual_seed`` (or drawn at import)."""
    return _initial_seed


def follow(owner) -> None:
    """Have ``manual_seed`` re-seed ``owner`` (anything with a ``manual_seed(seed)`` method) from now on.

    Held weakly. Every ``Backend`` calls it when created; a generator
    created later starts from ``initial_seed()``.

    Example::

        class Dice:
            def manual_seed(self, seed):
                self.rng = numpy.random.default_rng(seed)

        dice = Dice(); follow(dice)
        minigrad.manual_seed(0)   # also seeds dice.rng
    """
    with _lock:
        _followers.add(owner)
