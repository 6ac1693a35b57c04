# Declarations of the OpenMP functions minigrad's kernels use; they exist
# (as serial stubs) even in a build without OpenMP.
cdef extern from "_omp_compat.h" nogil:
    int MINIGRAD_HAVE_OPENMP
    int omp_get_max_threads()
    void omp_set_num_threads(int n)
    int omp_get_thread_num()
    int omp_get_num_threads()
    void minigrad_omp_barrier()
    int minigrad_team_size(int n)
    double minigrad_now()
    int minigrad_probe_team(int n, double late)
    int minigrad_acquire(int* flag)
    void minigrad_release(int* flag)
