"""Build script for minigrad's compiled extension modules.

Metadata lives in pyproject.toml; this file only describes the Cython
extensions. OpenMP is used when the compiler supports it (detected by
compiling and linking a tiny test program, the way scikit-learn does) and the
build still succeeds without it. Environment variables:

* ``MINIGRAD_NO_OPENMP=1``: build without OpenMP even if it is available.
* ``MINIGRAD_NATIVE=1``: add ``-march=native`` (faster kernels, but the build
  then only runs on CPUs like the build machine; never use it for wheels).
* ``MINIGRAD_CYTHON_ANNOTATE=1``: write Cython's HTML annotation next to the
  sources, to see which lines still call into the interpreter.
"""

import glob
import os
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXT_DIR = os.path.join("minigrad", "_ext")

# Every .pyx under minigrad/_ext is one extension module: the engine, the
# thread/tuning module, and the three builds of the CPU kernels (_kernels,
# _kernels_avx2, _kernels_avx512: one source, a kernel family per .pxi,
# generic over float32/float64 through Cython fused types).
MODULES = sorted(
    os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(EXT_DIR, "*.pyx"))
)

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}


def _flag_true(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class BuildExtWithOpenMP(build_ext):
    """``build_ext`` that adds OpenMP flags when the compiler can use them."""

    def _openmp_flags(self):
        if _flag_true("MINIGRAD_NO_OPENMP"):
            print("minigrad: OpenMP disabled by MINIGRAD_NO_OPENMP")
            return [], []
        if self.compiler.compiler_type == "msvc":
            compile_flags, link_flags = ["/openmp"], []
        else:
            compile_flags, link_flags = ["-fopenmp"], ["-fopenmp"]
        code = textwrap.dedent(
            """
            #include <omp.h>
            int main(void) {
                int n = 0;
                #pragma omp parallel reduction(+:n)
                n += 1;
                return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
            }
            """
        )
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "check_openmp.c")
            with open(src, "w") as f:
                f.write(code)
            try:
                objects = self.compiler.compile(
                    [src], output_dir=tmp, extra_postargs=compile_flags
                )
                self.compiler.link_executable(
                    objects, "check_openmp", output_dir=tmp, extra_postargs=link_flags
                )
            except Exception as exc:  # any compiler/linker failure means "no OpenMP"
                print(f"minigrad: building without OpenMP ({type(exc).__name__})")
                return [], []
        print("minigrad: building with OpenMP")
        return compile_flags, link_flags

    def build_extensions(self):
        compile_flags, link_flags = self._openmp_flags()
        extra = []
        if self.compiler.compiler_type != "msvc":
            # -fno-math-errno: no kernel reads errno, and without it sqrt cannot be vectorized (each call
            # must be able to set errno for a negative argument): Adam's update ran one element at a time.
            extra = ["-O3", "-g0", "-fno-math-errno", "-Wno-unused-function", "-Wno-unknown-pragmas"]
            if _flag_true("MINIGRAD_NATIVE"):
                extra.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + extra + compile_flags
            ext.extra_link_args = list(ext.extra_link_args) + link_flags
        super().build_extensions()


def extensions():
    exts = [
        Extension(
            f"minigrad._ext.{name}",
            [os.path.join(EXT_DIR, f"{name}.pyx")],
            include_dirs=[numpy.get_include(), EXT_DIR],
            # the kernel families and C primitives every kernel build includes: a change rebuilds them
            depends=sorted(glob.glob(os.path.join(EXT_DIR, "*.h")) + glob.glob(os.path.join(EXT_DIR, "*.pxi"))),
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        compiler_directives=COMPILER_DIRECTIVES,
        annotate=_flag_true("MINIGRAD_CYTHON_ANNOTATE"),
        nthreads=0 if sys.platform == "win32" else min(4, os.cpu_count() or 1),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithOpenMP})
