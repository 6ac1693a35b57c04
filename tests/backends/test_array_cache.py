"""The cache of large array buffers the CPU backend gives NumPy (minigrad/_ext/_memory.h)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from minigrad.backends import cpu
from minigrad._ext import _memory

MIN = _memory.stats()["min_block"]

pytestmark = pytest.mark.skipif(not cpu.ARRAY_CACHE, reason="the cache is switched off (MINIGRAD_ARRAY_CACHE_MB=0)")


@pytest.fixture
def cache():
    _memory.clear()
    yield
    _memory.clear()


def test_a_freed_large_buffer_serves_the_next_array_of_its_size(cache):
    n = MIN // 8 + 7
    a = np.empty(n)
    address = a.ctypes.data
    del a
    held = _memory.stats()
    assert held["bytes"] == n * 8
    b = np.full(n, 2.5)  # same size: the cached block, with its new values
    assert b.ctypes.data == address and _memory.stats()["hits"] == held["hits"] + 1
    assert _memory.stats()["bytes"] == 0
    assert float(b[0]) == float(b[-1]) == 2.5


def test_zeroed_small_and_other_sized_arrays_are_not_served_from_the_cache(cache):
    n = MIN // 8 + 1
    a = np.empty(n)
    del a
    z = np.zeros(n)
    assert not z.any()                            # calloc: always fresh zeros
    assert _memory.stats()["bytes"] == n * 8      # the cached block is still there
    small = np.empty(1000)
    del small
    assert _memory.stats()["bytes"] == n * 8      # below the threshold: plain malloc/free


def test_the_cache_keeps_at_most_its_capacity(cache):
    cap = _memory.stats()["capacity"]
    arrays = [np.empty(MIN // 8 + i) for i in range(_memory.stats()["blocks"] + 2)]
    del arrays
    assert 0 < _memory.stats()["bytes"] <= cap


def test_arrays_from_other_threads_and_contexts_free_cleanly(cache):
    made = []
    t = threading.Thread(target=lambda: made.append(np.ones(MIN // 8 + 3)))
    t.start()
    t.join()
    assert float(made.pop().sum()) == MIN // 8 + 3   # allocated with NumPy's default handler, freed by it


def test_the_cache_can_be_switched_off():
    env = dict(os.environ, MINIGRAD_ARRAY_CACHE_MB="0")
    code = "from minigrad.backends import cpu; print(cpu.ARRAY_CACHE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
