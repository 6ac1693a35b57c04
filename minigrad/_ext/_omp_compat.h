/* OpenMP entry points that also exist when the build has no OpenMP, so the
   Cython sources compile either way (setup.py decides which). */
#ifndef MINIGRAD_OMP_COMPAT_H
#define MINIGRAD_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#define MINIGRAD_HAVE_OPENMP 1
#else
#define MINIGRAD_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif
/* A barrier of the innermost enclosing parallel region (an orphaned
   directive, so Cython code in a parallel() block can call it); nothing
   without OpenMP. */
static inline void minigrad_omp_barrier(void) {
#ifdef _OPENMP
    _Pragma("omp barrier")
#endif
}
/* The size of the team a parallel region asking for n threads gets (for tests). */
static inline int minigrad_team_size(int n) {
    int size = 1;
#ifdef _OPENMP
    _Pragma("omp parallel num_threads(n)")
    {
        _Pragma("omp single")
        size = omp_get_num_threads();
    }
#else
    (void)n;
#endif
    return size;
}
/* Seconds on a monotonic clock (omp_get_wtime where there is OpenMP). */
static inline double minigrad_now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0.0;
#endif
}
/* How many of n threads are ready to work now: an empty parallel region of n threads, counting
   those that entered it within late seconds of its start (at least 1: the caller). A thread that
   waits for a core (the machine is busy) enters late. */
static inline int minigrad_probe_team(int n, double late) {
    int on_time = 0;
#ifdef _OPENMP
    double t0 = omp_get_wtime();
    _Pragma("omp parallel num_threads(n) reduction(+:on_time)")
    on_time += omp_get_wtime() - t0 <= late;
#else
    (void)n;
    (void)late;
#endif
    return on_time < 1 ? 1 : on_time;
}
/* A flag only one thread at a time gets (1: got it); minigrad_release gives it back. */
static inline int minigrad_acquire(int* flag) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_exchange_n(flag, 1, __ATOMIC_ACQUIRE) == 0;
#else
    if (*flag) return 0;
    *flag = 1;
    return 1;
#endif
}
static inline void minigrad_release(int* flag) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(flag, 0, __ATOMIC_RELEASE);
#else
    *flag = 0;
#endif
}
#endif
