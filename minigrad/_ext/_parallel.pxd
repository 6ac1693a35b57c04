# The one tuning module every kernel module cimports: minigrad's thread budget and the thresholds
# that decide when a kernel runs threaded or writes with streaming stores. One copy of each knob
# for the whole process, whichever SIMD build of a kernel family runs.

cdef int num_threads() noexcept nogil
cdef int threads_for(Py_ssize_t work) noexcept nogil
cdef Py_ssize_t stream_min_bytes() noexcept nogil
cdef int team_mode() noexcept nogil
cdef Py_ssize_t team_min_channel_bytes() noexcept nogil
