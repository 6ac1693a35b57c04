# cython: language_level=3
"""Threads and tuning shared by every compiled kernel module (the one tuning module).

* **The thread budget.** Every parallel region of minigrad's kernels asks
  ``threads_for(work)`` for its team size and passes it to OpenMP
  explicitly (``num_threads``). OpenMP's own setting (``omp_set_num_threads``)
  is per calling thread: a thread started later would still see the old
  value. A plain global read by every region is process-wide, like
  ``torch.set_num_threads``, and it never changes the setting of another
  library that shares the OpenMP runtime (PyTorch's CPU wheels ship libgomp).
* **After fork.** GNU OpenMP cannot restart its worker pool in a child
  process: the child inherits the record of the parent's workers but not the
  threads, and its first parallel region waits for them forever. A child of
  a process whose kernels started a team therefore runs them on one thread
  (``after_fork_in_child``, registered with ``os.register_at_fork`` by
  ``minigrad.threads``), as PyTorch does for its pools.
* **A busy machine.** A parallel region ends when its slowest thread
  does; a thread that waits for a core (another program runs there) holds
  the whole team back for a scheduler time slice, milliseconds, and a
  training step of short regions then takes many times longer than on one
  thread. So the team is only as large as the number of threads that are
  ready: at most every ``probe_interval`` (0.1 s), the first kernel that
  would start a team runs an empty one first and counts the threads that
  entered it within ``probe_late`` (250 µs; a quiet machine answers in a
  few µs, a busy one in a time slice). Until the next probe, kernels use
  that many threads. On a quiet machine the probe costs a few µs every
  0.1 s; ``set_adaptive(False)`` (or ``MINIGRAD_ADAPTIVE_THREADS=0``)
  always uses the full budget.
* **Thresholds.** ``parallel_min_size`` (elements below which a kernel runs
  on one thread: a fork/join costs microseconds), ``stream_min_bytes``
  (outputs from which the normalization kernels use streaming stores), the
  per-channel team split. The SIMD builds of a kernel family are separate
  extension modules; they all read these, so a test or benchmark that sets
  one sets it for every build.
"""

import os

from minigrad._ext._omp_compat cimport (MINIGRAD_HAVE_OPENMP, minigrad_acquire, minigrad_now, minigrad_probe_team,
                                       minigrad_release, minigrad_team_size, omp_get_max_threads)

cdef enum:
    # A request above this many threads is refused: 20,000 once started 20,000 threads and 100,000
    # crashed the process. 256 is above the cores of any machine minigrad has been measured on.
    _HARD_CAP = 256

cdef int _threads = 1
cdef bint _forked_child = False
cdef bint _pool_started = False
cdef bint _adaptive = True
cdef int _ready = 1              # threads the last probe found ready (<= _threads)
cdef double _next_probe = 0.0    # minigrad_now() after which the next kernel probes again
cdef double _probe_interval = 0.1
cdef double _probe_late = 250e-6
cdef int _probing = 0
cdef Py_ssize_t _parallel_min_size = 1 << 16
cdef Py_ssize_t _stream_min_bytes = 16 << 20
cdef int _team_mode = -1
cdef Py_ssize_t _team_min_channel_bytes = 512 * 1024


cdef int num_threads() noexcept nogil:
    return _threads


cdef int threads_for(Py_ssize_t work) noexcept nogil:
    """The team size for a kernel over ``work`` elements: 1 below ``parallel_min_size``, else the budget
    (or, adaptive, the threads the last probe found ready)."""
    global _pool_started, _ready, _next_probe, _probing
    cdef int n = _threads
    cdef double now
    if n < 2 or work < _parallel_min_size:
        return 1
    _pool_started = True
    if not _adaptive:
        return n
    now = minigrad_now()
    # one probe at a time (kernels may run in several Python threads); the others use the last answer
    if now >= _next_probe and minigrad_acquire(&_probing):
        _ready = minigrad_probe_team(n, _probe_late)
        _next_probe = minigrad_now() + _probe_interval
        minigrad_release(&_probing)
    return min(_ready, n)


cdef Py_ssize_t stream_min_bytes() noexcept nogil:
    return _stream_min_bytes


cdef int team_mode() noexcept nogil:
    return _team_mode


cdef Py_ssize_t team_min_channel_bytes() noexcept nogil:
    return _team_min_channel_bytes


def have_openmp():
    """True if the extension modules were built with OpenMP."""
    return bool(MINIGRAD_HAVE_OPENMP)


def max_threads():
    """The largest thread count ``set_num_threads`` accepts (1 without OpenMP)."""
    return _HARD_CAP if MINIGRAD_HAVE_OPENMP else 1


def get_num_threads():
    """Number of threads the kernels use (the process-wide budget)."""
    return _threads


def set_num_threads(int n):
    """Set the process-wide budget (validated by ``minigrad.threads.set_num_threads``)."""
    global _threads, _next_probe
    if n < 1 or n > max_threads():
        raise ValueError(f"the number of threads must be in [1, {max_threads()}], got {n}")
    _threads = 1 if _forked_child else n
    _next_probe = 0.0  # probe the new team size at the next kernel


def forked_child():
    """True in a child forked after the parent's kernels had started threads (they then run on one)."""
    return _forked_child


def after_fork_in_child():
    """Make a forked child safe: one thread if the parent had started an OpenMP team (see the module doc)."""
    global _threads, _forked_child, _pool_started
    if _pool_started:
        _forked_child = True
        _threads = 1
        _pool_started = False


def team_size(Py_ssize_t work):
    """The number of threads a kernel over ``work`` elements runs on, started from the calling thread
    (a real parallel region: for tests of the budget)."""
    cdef int n = threads_for(work)
    with nogil:
        n = minigrad_team_size(n)
    return n


def adaptive():
    """Whether the team size follows the threads a probe finds ready (see the module doc)."""
    return _adaptive


def set_adaptive(bint on, double interval=0.1, double late=250e-6):
    """Adapt the team size to the ready threads (``on``), probing every ``interval`` seconds and counting
    a thread that enters a region ``late`` seconds after its start as busy; off: always the budget."""
    global _adaptive, _probe_interval, _probe_late, _next_probe
    if interval < 0 or late <= 0:
        raise ValueError(f"the probe interval must be >= 0 and the lateness > 0, got {interval} and {late}")
    _adaptive, _probe_interval, _probe_late, _next_probe = on, interval, late, 0.0


def ready_threads():
    """The team size the last probe found ready (the budget when not adaptive)."""
    return min(_ready, _threads) if _adaptive else _threads


def parallel_min_size():
    """Number of elements from which the kernels use several threads."""
    return _parallel_min_size


cdef Py_ssize_t _nonnegative(Py_ssize_t n) except -1:
    if n < 0:
        raise ValueError(f"the threshold must be >= 0, got {n}")
    return n


def set_parallel_min_size(Py_ssize_t n):
    """Set the size threshold for multithreading (for benchmarks and tests; 0: always threaded)."""
    global _parallel_min_size
    _parallel_min_size = _nonnegative(n)


def get_stream_min_bytes():
    """Output size (bytes) from which the normalization kernels use streaming stores."""
    return _stream_min_bytes


def set_stream_min_bytes(Py_ssize_t n):
    """Set the streaming-store threshold (0: always, for tests; a huge value: never)."""
    global _stream_min_bytes
    _stream_min_bytes = _nonnegative(n)


def get_team_mode():
    """How the per-channel kernels share channels among threads (see ``set_team_mode``)."""
    return _team_mode


def set_team_mode(int mode):
    """-1 automatic, 0 a range of channels per thread, 1 every channel by the whole team (for tests)."""
    global _team_mode
    if mode not in (-1, 0, 1):
        raise ValueError(f"the team mode must be -1, 0 or 1, got {mode}")
    _team_mode = mode


def _init():
    global _threads, _adaptive
    _threads = max(1, min(omp_get_max_threads(), max_threads()))
    _adaptive = os.environ.get("MINIGRAD_ADAPTIVE_THREADS", "1").strip().lower() not in ("0", "false", "no", "off")


_init()
