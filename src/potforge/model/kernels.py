"""Loader for the C AEV kernels (``_kernels/aev.c``), compiled on first use and cached.

Why compile at run time rather than at install time: a user without a C compiler (a laptop
trying potforge) still gets a working package; potforge then falls back to the pure-PyTorch
AEV (``potforge.model.aev.aev_torch``), which is exact but several times slower on a CPU.
The compiled library is cached under ``$POTFORGE_CACHE_DIR`` (default
``~/.cache/potforge``), keyed by the source, compiler, flags and CPU, so that a home directory
shared by cluster nodes of different CPU generations never runs code built for another CPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from potforge import durable

_KERNEL_DIR = Path(__file__).with_name("_kernels")
_lock = threading.Lock()
_libs: dict[tuple, ctypes.CDLL | None] = {}
_warned = False

# -ffast-math lets GCC call glibc's vectorised exp/log (libmvec); the object is linked without
# it so that the library does not flip the process-wide flush-to-zero flags when loaded.
_COMPILE_FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-fPIC", "-std=c99"]
_LINK_FLAGS = ["-shared", "-fopenmp"]


def cache_dir() -> Path:
    """Directory holding compiled kernels (``$POTFORGE_CACHE_DIR`` or ``~/.cache/potforge``)."""
    root = os.environ.get("POTFORGE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "potforge"


def _cpu_fingerprint() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    flags += line
    except OSError:
        flags = platform.processor()
    return platform.machine() + hashlib.sha256(flags.encode()).hexdigest()[:16]


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return cc


def _arch_flags(cc: str) -> list[str]:
    # -march=native is what makes the SIMD exp/log possible; some compilers (Apple clang on
    # arm64) reject it, so it is probed rather than assumed.
    # On x86 with AVX-512, GCC still prefers 256-bit vectors by default; the AEV kernels lay
    # their pair loops out for full-width vectors (16 float lanes), measured 1.5-2.4x faster.
    for flags in (["-march=native", "-mprefer-vector-width=512"], ["-march=native"]):
        probe = subprocess.run(
            [cc, *flags, "-x", "c", "-c", "-o", os.devnull, "-"],
            input=b"int x;",
            capture_output=True,
        )
        if probe.returncode == 0:
            return flags
    return []


def _build(source: str, defines: list[str]) -> Path:
    """Compile ``_kernels/<source>`` with ``defines`` into the cache (once) and return the .so."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    src = _KERNEL_DIR / source
    flags = _COMPILE_FLAGS + _arch_flags(cc) + defines
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        src.read_bytes() + " ".join(flags).encode() + version.encode() + _cpu_fingerprint().encode()
    ).hexdigest()[:20]
    target = cache_dir() / "kernels" / f"{src.stem}_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    libs = ["-lmvec", "-lm"] if sys.platform.startswith("linux") else ["-lm"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj = Path(tmp) / "k.o"
        so = Path(tmp) / "k.so"
        for cmd in (
            [cc, *flags, "-c", str(src), "-o", str(obj)],
            [cc, *_LINK_FLAGS, str(obj), "-o", str(so), *libs],
        ):
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"compiling {source} failed: {' '.join(cmd)}\n{res.stderr}")
        durable.write_bytes(target, so.read_bytes())  # a concurrent process never sees half a library
    return target


def _declare_aev(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.aev_forward.argtypes = [i64, p, p, p, p, p, p, p, i32]
    lib.aev_vjp.argtypes = [i64, i64, p, p, p, p, p, p, i64, p, p, i32]
    lib.aev_jvp.argtypes = [i64, i64, p, p, p, p, p, p, i64, p, p, i32]
    for fn in (lib.aev_forward, lib.aev_vjp, lib.aev_jvp):
        fn.restype = i32


def _declare_mlp(lib: ctypes.CDLL, precision: str) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    alpha = ctypes.c_float if precision == "float32" else ctypes.c_double
    lib.mlp_energies_grads.argtypes = [i64, i32, i32, p, p, p, p, alpha, p, p, p, i32, i32]
    lib.mlp_energies_grads.restype = i32


def _declare_neighbors(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    lib.nl_count.argtypes = [i64, p, p, p, f64, p, p, i32]
    lib.nl_fill.argtypes = [i64, p, p, p, f64, p, p, i32, p, p, i32]
    lib.nl_count.restype = i32
    lib.nl_fill.restype = i32


def _load(key: tuple, source: str, defines: list[str], declare) -> ctypes.CDLL | None:
    global _warned
    if os.environ.get("POTFORGE_AEV_BACKEND", "").lower() == "torch":
        return None
    with _lock:
        if key not in _libs:
            try:
                lib = ctypes.CDLL(str(_build(source, defines)))
                declare(lib)
                _libs[key] = lib
            except (RuntimeError, OSError) as exc:
                _libs[key] = None
                if not _warned:
                    _warned = True
                    warnings.warn(
                        f"potforge: C kernels unavailable, using the slower PyTorch/vesin path ({exc})",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        return _libs[key]


def load(precision: str, shape: tuple[int, int, int]) -> ctypes.CDLL | None:
    """The compiled AEV kernels for ``float32``/``float64`` and an AEV shape (radial shifts,
    angular shifts, angular sections), or None if they cannot be built here.

    Set ``POTFORGE_AEV_BACKEND=torch`` to disable all C kernels.
    """
    n_r, n_a, n_z = shape
    defines = [f"-DAEV_NR={n_r}", f"-DAEV_NA={n_a}", f"-DAEV_NZ={n_z}"]
    defines += ["-DAEV_FLOAT"] if precision == "float32" else []
    return _load(("aev", precision, *shape), "aev.c", defines, _declare_aev)


def load_mlp(precision: str) -> ctypes.CDLL | None:
    """The compiled ensemble-network kernel for ``float32``/``float64``, or None."""
    defines = ["-DMLP_FLOAT"] if precision == "float32" else []
    return _load(("mlp", precision), "mlp.c", defines, lambda lib: _declare_mlp(lib, precision))


def mlp_energies_grads(
    weights: list[torch.Tensor], biases: list[torch.Tensor], alpha: float, x: torch.Tensor, want_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Every member's atomic energies (M, n) and AEV gradients (M, n, F) through the C kernel
    (``_kernels/mlp.c``), or None when it is not available for this dtype. weights: per layer
    (M, in, out); biases: per layer (M, 1, out); x: (n, F) on the CPU. No autograd."""
    name = {torch.float32: "float32", torch.float64: "float64"}.get(x.dtype)
    lib = None if name is None else load_mlp(name)
    if lib is None:
        return None
    x = x.detach().contiguous()
    m, n = weights[0].shape[0], x.shape[0]
    sizes = torch.tensor([weights[0].shape[1], *[w.shape[2] for w in weights]], dtype=torch.int32)
    w = [t.detach().to(x.dtype).contiguous() for t in weights]
    b = [t.detach().to(x.dtype).contiguous() for t in biases]
    wt = [t.transpose(1, 2).contiguous() for t in w]
    arrays = [(ctypes.c_void_p * len(w))(*[_ptr(t) for t in group]) for group in (w, b, wt)]
    e = torch.empty(m, n, dtype=x.dtype)
    g = torch.empty(m, n, x.shape[1], dtype=x.dtype) if want_grad else torch.empty(1, dtype=x.dtype)
    code = lib.mlp_energies_grads(
        n, m, len(w), _ptr(sizes), *[ctypes.cast(a, ctypes.c_void_p) for a in arrays], alpha, _ptr(x), _ptr(e),
        _ptr(g), int(want_grad), torch.get_num_threads(),
    )  # fmt: skip
    if code == -1:
        raise MemoryError("network kernel could not allocate its scratch memory")
    if code != 0:
        return None  # a shape the kernel does not take: the caller uses the PyTorch path
    return e, (g if want_grad else None)


def load_neighbors() -> ctypes.CDLL | None:
    """The compiled neighbour-list kernels, or None if they cannot be built here."""
    return _load(("neighbors",), "neighbors.c", [], _declare_neighbors)


def available(dtype: torch.dtype, shape: tuple[int, int, int]) -> bool:
    """Whether the C kernels can serve tensors of this dtype and AEV shape (CPU only)."""
    name = {torch.float32: "float32", torch.float64: "float64"}.get(dtype)
    return name is not None and load(name, shape) is not None


def _ptr(t: torch.Tensor | np.ndarray) -> int:
    return t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data


def _check(code: int) -> None:
    if code == -1:
        raise MemoryError("AEV kernel could not allocate its scratch memory")
    if code != 0:
        raise RuntimeError(f"AEV kernel called with parameters of another AEV shape (code {code})")


class KernelArgs:
    """Everything the C kernels need about one neighbour graph, as contiguous CPU arrays."""

    def __init__(
        self,
        offsets: torch.Tensor,
        vec: torch.Tensor,
        neighbor_species: torch.Tensor,
        int_params: torch.Tensor,
        real_params: torch.Tensor,
        triu: torch.Tensor,
        n_features: int,
    ) -> None:
        self.offsets = offsets.to(torch.int64).contiguous()
        self.vec = vec.detach().contiguous()
        self.neighbor_species = neighbor_species.to(torch.int32).contiguous()
        self.int_params = int_params.to(torch.int32).contiguous()
        self.real_params = real_params.to(vec.dtype).contiguous()
        self.triu = triu.to(torch.int32).contiguous()
        self.n_centers = self.offsets.shape[0] - 1
        self.n_edges = self.vec.shape[0]
        self.n_features = n_features
        precision = "float32" if vec.dtype == torch.float32 else "float64"
        shape = tuple(int(x) for x in self.int_params[1:4])
        lib = load(precision, shape)  # type: ignore[arg-type]
        if lib is None:
            raise RuntimeError("C AEV kernels are not available")
        self.lib = lib

    def _common(self) -> tuple[int, ...]:
        return (
            _ptr(self.offsets),
            _ptr(self.vec),
            _ptr(self.neighbor_species),
            _ptr(self.int_params),
            _ptr(self.real_params),
            _ptr(self.triu),
        )

    def forward(self) -> torch.Tensor:
        """AEVs, shape (n_centers, n_features)."""
        out = torch.empty(self.n_centers, self.n_features, dtype=self.vec.dtype)
        _check(self.lib.aev_forward(self.n_centers, *self._common(), _ptr(out), torch.get_num_threads()))
        return out

    def vjp(self, grad_aev: torch.Tensor) -> torch.Tensor:
        """grad_aev (M, n_centers, n_features) -> gradient wrt edge vectors (n_edges, M, 3)."""
        g = grad_aev.detach().to(self.vec.dtype).contiguous()
        m = g.shape[0]
        out = torch.empty(self.n_edges, m, 3, dtype=self.vec.dtype)
        _check(
            self.lib.aev_vjp(
                self.n_centers, self.n_edges, *self._common(), m, _ptr(g), _ptr(out), torch.get_num_threads()
            )
        )
        return out

    def jvp(self, tangent_vec: torch.Tensor) -> torch.Tensor:
        """tangent_vec (n_edges, M, 3) -> tangent of the AEVs (M, n_centers, n_features)."""
        t = tangent_vec.detach().to(self.vec.dtype).contiguous()
        m = t.shape[1]
        out = torch.empty(m, self.n_centers, self.n_features, dtype=self.vec.dtype)
        _check(
            self.lib.aev_jvp(
                self.n_centers, self.n_edges, *self._common(), m, _ptr(t), _ptr(out), torch.get_num_threads()
            )
        )
        return out


def periodic_neighbor_list(
    atom_start: np.ndarray,
    positions: np.ndarray,
    cells: np.ndarray,
    cutoff: float,
    species: np.ndarray,
    n_species: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Full centre-sorted neighbour list of a batch of fully periodic cells, or None when the
    C library is unavailable. Returns (offsets (N+1,), neighbors (E,), shifts (E, 3) int32,
    smallest interatomic distance). Raises ValueError for a degenerate cell."""
    lib = load_neighbors()
    if lib is None:
        return None
    atom_start = np.ascontiguousarray(atom_start, dtype=np.int64)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    cells = np.ascontiguousarray(cells, dtype=np.float64)
    species = np.ascontiguousarray(species, dtype=np.int64)
    n_atoms = int(atom_start[-1])
    n_sys = len(atom_start) - 1
    threads = torch.get_num_threads()
    counts = np.zeros(n_atoms, np.int64)
    min_dist = np.full(1, np.inf)
    code = lib.nl_count(n_sys, _ptr(atom_start), _ptr(pos), _ptr(cells), cutoff, _ptr(counts), _ptr(min_dist), threads)
    if code == -3:
        raise ValueError("degenerate (singular) cell")
    _check(code)
    offsets = np.zeros(n_atoms + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    n_edges = int(offsets[-1])
    nbr = np.empty(n_edges, np.int64)
    shift = np.empty((n_edges, 3), np.int32)
    code = lib.nl_fill(
        n_sys,
        _ptr(atom_start),
        _ptr(pos),
        _ptr(cells),
        cutoff,
        _ptr(offsets),
        _ptr(species),
        n_species,
        _ptr(nbr),
        _ptr(shift),
        threads,
    )
    _check(code)
    return offsets, nbr, shift, float(min_dist[0])
