# GPAW build configuration used by `make gpaw` (GPAW_CONFIG points here).
# Without 'blas' in libraries GPAW silently builds without BLAS (very slow).
# GPAW >= 26 is C++: without an explicit C++ compiler it hands its sources to gcc as C.
compiler = "g++"
fftw = True
libraries += ["fftw3", "blas"]  # noqa: F821  (GPAW's setup.py defines `libraries`)
