"""Inherent structures of surviving trajectories (``sampler.quench``): the local minimum of the
model's energy below a trajectory's last frame, found by ASE's FIRE on positions and cell (to
zero stress, a unit-cell filter) or on positions alone in the trajectory's cell (the
Stillinger-Weber inherent structure at the volume it reached), with the ensemble's
disagreement there.

Why: Langevin MD labels hot frames only. A model can fit thermal crystals to 1 meV/atom and still
place the perfect lattice 20 meV/atom off, because nothing near 0 K is in its data; the minimum
below a long trajectory is what static validation and cold production MD see first. ASE's
optimiser is used (not the MD engine) because these are few, small and one at a time.
"""

from __future__ import annotations

from ase import Atoms

from potforge.model.interface import Potential
from potforge.sample.config import QuenchConfig


def quench(
    model: Potential, atoms: Atoms, config: QuenchConfig, relax_cell: bool = True
) -> tuple[Atoms, dict[str, float]]:
    """The minimum below ``atoms`` under ``model`` (a copy) and the uncertainty measures there:
    ρ = σ_E/√N (eV/√atom), mean and max per-atom force spread (eV/Å), as the sampler's checks.
    ``relax_cell`` relaxes the cell to zero stress too (the sampler takes it from
    :meth:`QuenchConfig.relaxes_cell`); otherwise the positions alone move."""
    import torch
    from ase.filters import UnitCellFilter
    from ase.optimize import FIRE

    from potforge.md.forces import Spread
    from potforge.model.calculator import PotforgeCalculator, atoms_to_batch

    work = atoms.copy()
    # the mean's forces alone while descending (a single gradient), every member's at the end
    work.calc = PotforgeCalculator(model, dtype=model.dtype, uncertainty=False)  # the model stays as it is
    target = UnitCellFilter(work) if relax_cell else work
    FIRE(target, logfile=None).run(fmax=config.fmax_eV_per_A, steps=config.max_steps)
    out = Atoms(numbers=work.numbers, positions=work.positions, cell=work.cell, pbc=True)
    out.wrap()
    pred = model.evaluate(atoms_to_batch([out], model), member_forces=True)
    spread = Spread([0], pred.member_energies, pred.energy_std, pred.force_std, torch.zeros(len(out), dtype=torch.long))
    return out, {k: float(v[0]) for k, v in spread.measures(torch.tensor([len(out)])).items()}
