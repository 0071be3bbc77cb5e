"""Structure analysis of periodic frames: radial distribution functions and common-neighbour
analysis (which local crystal structure each atom sits in), for the dynamic validation
benchmarks and the sampler's structure census.

CNA is OVITO's adaptive common neighbour analysis (Stukowski, Modelling Simul. Mater. Sci. Eng.
20, 045021 (2012)): fcc, hcp, bcc, icosahedral or other per atom, with no cutoff to choose.
OVITO's module binds itself to the thread that first uses it (another thread then crashes the
process), so every call here runs on one dedicated thread per process.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ase import Atoms

from potforge.errors import PotforgeError


class AnalysisError(PotforgeError):
    """A structure analysis could not run (its dependency is missing)."""


def rdf(atoms: Atoms, r_max_A: float, bin_A: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) of a periodic structure: bin centres (nb,) Å and g (nb,).
    Every periodic image within ``r_max_A`` counts (no minimum-image limit), normalised by the
    ideal-gas count of each exact shell volume at the structure's density."""
    from ase.neighborlist import neighbor_list

    edges = np.arange(0.0, r_max_A + 0.5 * bin_A, bin_A)
    d = neighbor_list("d", atoms, float(edges[-1]))
    hist, _ = np.histogram(d, bins=edges)
    n = len(atoms)
    rho = n / atoms.get_volume()
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (n * rho * shell)


def coordination(r: np.ndarray, g: np.ndarray, density_per_A3: float, bin_A: float) -> np.ndarray:
    """Running coordination number n(r) = ρ ∫ g 4π r² dr up to each bin's upper edge."""
    upper = r + 0.5 * bin_A
    shell = 4.0 / 3.0 * np.pi * (upper**3 - (upper - bin_A) ** 3)
    return np.cumsum(density_per_A3 * g * shell)


#: OVITO's structure names by CNA type index.
CNA_NAMES = ("other", "fcc", "hcp", "bcc", "ico")


_ovito_lock = threading.Lock()
_ovito_thread: tuple[int, ThreadPoolExecutor] | None = None


def _ovito() -> ThreadPoolExecutor:
    """This process's OVITO thread (created on first use; a forked child makes its own)."""
    global _ovito_thread
    with _ovito_lock:
        if _ovito_thread is None or _ovito_thread[0] != os.getpid():
            _ovito_thread = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="potforge-ovito"))
        return _ovito_thread[1]


def cna_types(atoms: Atoms) -> np.ndarray:
    """Adaptive common neighbour analysis (OVITO, Stukowski 2012) of every atom: (N,) indices into
    :data:`CNA_NAMES` (0 other, 1 fcc, 2 hcp, 3 bcc, 4 icosahedral)."""
    return _ovito().submit(_cna_types, atoms.copy()).result()


def _cna_types(atoms: Atoms) -> np.ndarray:
    try:
        from ovito.io.ase import ase_to_ovito
        from ovito.modifiers import CommonNeighborAnalysisModifier
        from ovito.pipeline import Pipeline, StaticSource
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise AnalysisError(
            f"common neighbour analysis needs OVITO's Python module (pip install ovito): {exc}"
        ) from None
    pipeline = Pipeline(source=StaticSource(data=ase_to_ovito(atoms)))
    pipeline.modifiers.append(CommonNeighborAnalysisModifier(mode=CommonNeighborAnalysisModifier.Mode.AdaptiveCutoff))
    return np.asarray(pipeline.compute().particles["Structure Type"][...], dtype=int)


def structure_fractions(atoms: Atoms) -> dict[str, float]:
    """Fraction of atoms of each CNA structure (keys of :data:`CNA_NAMES`)."""
    counts = np.bincount(cna_types(atoms), minlength=len(CNA_NAMES))[: len(CNA_NAMES)]
    return {name: float(c) / len(atoms) for name, c in zip(CNA_NAMES, counts, strict=True)}


def close_packed_fraction(atoms: Atoms) -> float:
    """Fraction of atoms in a close-packed crystalline environment (fcc or hcp)."""
    f = structure_fractions(atoms)
    return f["fcc"] + f["hcp"]


def crystalline_fraction(atoms: Atoms) -> float:
    """Fraction of atoms in any crystalline environment CNA knows (fcc, hcp or bcc)."""
    f = structure_fractions(atoms)
    return f["fcc"] + f["hcp"] + f["bcc"]
