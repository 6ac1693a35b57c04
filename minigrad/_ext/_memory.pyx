# cython: language_level=3
"""A cache of large array buffers for NumPy (see ``_memory.h``): installed by the CPU backend.

NumPy keeps its data allocator in a context variable: ``install()`` sets it
for the calling thread's context (the thread that imports minigrad, where
training runs); arrays remember the allocator that made them and are freed
by it, so arrays made before or elsewhere are unaffected.
"""

from cpython.pycapsule cimport PyCapsule_New

cimport numpy as cnp

cdef extern from "_memory.h" nogil:
    ctypedef struct PyDataMem_Handler:
        pass
    PyDataMem_Handler mg_cache_handler
    size_t mg_cache_bytes
    size_t mg_cache_cap
    size_t mg_cache_hits
    size_t mg_cache_misses
    size_t MG_CACHE_MIN
    int MG_CACHE_BLOCKS
    void mg_cache_clear()

cdef extern from "numpy/ndarrayobject.h":
    object PyDataMem_SetHandler(object handler)

cnp.import_array()


def install(Py_ssize_t cap_bytes=256 << 20):
    """Make this context's NumPy arrays use the cache, holding at most ``cap_bytes`` of freed blocks."""
    global mg_cache_cap
    if cap_bytes < 0:
        raise ValueError(f"the cache's capacity must be >= 0 bytes, got {cap_bytes}")
    mg_cache_cap = cap_bytes
    PyDataMem_SetHandler(PyCapsule_New(&mg_cache_handler, "mem_handler", NULL))


def clear():
    """Return every cached block to the system."""
    mg_cache_clear()


def stats():
    """The cache's state: bytes held, capacity, hits and misses (requests of cacheable size)."""
    return {"bytes": mg_cache_bytes, "capacity": mg_cache_cap, "hits": mg_cache_hits, "misses": mg_cache_misses,
            "min_block": MG_CACHE_MIN, "blocks": MG_CACHE_BLOCKS}
