"""The ensemble's disagreement inside a LAMMPS run, for stopping it where the model is unsure.

Debian's LAMMPS refuses ``pair_style hybrid/overlay`` with ``kim``, so the spread cannot come
from a second pair style. Its PYTHON package can call potforge instead: a python-style LAMMPS
variable runs :func:`spread` on the gathered positions, and ``fix halt`` stops the run when the
variable crosses a threshold (``examples/lammps/in.uncertainty``)::

    python pf_spread input 1 SELF return v_pf_spread format pf here \"\"\"
    def pf_spread(ptr):
        from potforge.export import lammps_spread
        return lammps_spread.spread(ptr)
    \"\"\"
    variable pf_spread python pf_spread
    fix pf_halt all halt 20 v_pf_spread > 0.3 error continue

The pair style (the KIM model) computes the dynamics; this only reads positions, so energies
and forces are exactly those of a run without it. Every MPI rank evaluates the same gathered
configuration with one thread and the same code, so all ranks reach the same verdict (a rank
that halted alone would leave the others waiting).

Measures (as the sampler's stop rules, ``potforge.sample.config.UncertaintyConfig``):
``energy`` ρ = σ_E/√N (eV/√atom), ``force_mean`` and ``force_max`` the mean and max over atoms
of the per-atom force spread √(Σ_m |F_m − F̄|²/(M−1)) (eV/Å).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MEASURES = ("energy", "force_mean", "force_max")


@dataclass
class _Monitor:
    model: object
    measure: str
    elements: tuple[str, ...]
    last_step: int = -1
    last: dict[str, float] = field(default_factory=dict)


_monitor: _Monitor | None = None


def configure(model: str, measure: str = "force_max", elements: str | list[str] | tuple[str, ...] = "Al") -> None:
    """Load the potforge model (a file or ``ani-al``: the ensemble the KIM model was exported
    from) and choose the measure; ``elements`` are the LAMMPS types' elements in type order
    (a list, or a comma-separated string from a LAMMPS variable)."""
    global _monitor
    import torch

    from potforge.model import load_model

    if measure not in MEASURES:
        raise ValueError(f"unknown spread measure {measure!r} (one of {', '.join(MEASURES)})")
    torch.set_num_threads(1)  # one thread per MPI rank, and the same numbers on every rank
    names = tuple(e.strip() for e in elements.split(",")) if isinstance(elements, str) else tuple(elements)
    _monitor = _Monitor(load_model(model, dtype=torch.float64), measure, names)


def measures(positions_A: np.ndarray, cell_A: np.ndarray, symbols: list[str], pbc=(True, True, True)) -> dict:
    """Every measure of one configuration (positions (N, 3) Å, cell rows (3, 3) Å)."""
    from ase import Atoms

    from potforge.model.calculator import atoms_to_batch

    assert _monitor is not None, "call configure() first"
    model = _monitor.model
    atoms = Atoms(symbols=symbols, positions=positions_A, cell=cell_A, pbc=pbc)
    pred = model.evaluate(atoms_to_batch([atoms], model), member_forces=True)  # type: ignore[attr-defined]
    f_std = pred.force_std.numpy()
    return {
        "energy": float(pred.energy_std[0]) / np.sqrt(len(atoms)),
        "force_mean": float(f_std.mean()),
        "force_max": float(f_std.max()),
    }


def spread(lmp_ptr) -> float:
    """The configured measure of the current LAMMPS configuration (called from LAMMPS with
    its own pointer, on every rank). Evaluated once per time step, however often it is asked."""
    from lammps import lammps

    if _monitor is None:
        raise RuntimeError("potforge.export.lammps_spread.configure() was not called in the LAMMPS input")
    lmp = lammps(ptr=lmp_ptr)
    step = int(lmp.extract_global("ntimestep"))
    if step != _monitor.last_step:
        n = int(lmp.get_natoms())
        # gathered in atom-ID order on every rank (a collective call: every rank makes it)
        x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3), shape=(3 * n,)).reshape(n, 3).copy()
        types = np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1), shape=(n,)).copy()
        boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
        lo, hi = np.array(boxlo), np.array(boxhi)
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        symbols = [_monitor.elements[t - 1] for t in types]
        _monitor.last = measures(x - lo, cell, symbols, pbc=[bool(p) for p in periodicity])
        _monitor.last_step = step
    return _monitor.last[_monitor.measure]
