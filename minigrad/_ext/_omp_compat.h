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
#endif
