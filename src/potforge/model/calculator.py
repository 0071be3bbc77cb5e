"""ASE calculator for potforge ensembles, and conversion of ASE ``Atoms`` to batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from potforge.model.ensemble import ANIEnsemble, MemberPrediction
from potforge.model.neighbors import AtomsBatch


def atoms_to_batch(frames: Sequence[Atoms], model: ANIEnsemble) -> AtomsBatch:
    """Flatten ASE structures into one :class:`AtomsBatch` in the model's dtype and device."""
    species = [model.species_index(a.get_chemical_symbols()) for a in frames]
    dtype, device = model.dtype, model.device
    return AtomsBatch(
        positions=torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype, device=device),
        species=torch.cat(species),
        system=torch.repeat_interleave(
            torch.arange(len(frames), device=device), torch.tensor([len(a) for a in frames], device=device)
        ),
        cells=torch.tensor(np.stack([a.cell.array for a in frames]), dtype=dtype, device=device),
        pbc=torch.tensor(np.stack([a.pbc for a in frames]), device=device),
    )


class PotforgeCalculator(Calculator):
    """ASE calculator for an :class:`ANIEnsemble` (ensemble mean energy, forces, stress).

    Besides the standard properties, ``results`` holds the ensemble's uncertainty:
    ``energy_std`` (eV), ``force_std`` (per atom, eV/Å), ``member_energies`` (eV) and
    ``member_forces`` (eV/Å). Stress is available for cells periodic in all three directions.

    model: an :class:`ANIEnsemble` or a path to a model file. device: ``cpu``, ``cuda``,
    ``cuda:N`` or ``auto`` (default: wherever ``model`` is).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "force_std"]

    def __init__(
        self,
        model: ANIEnsemble | str | Path,
        dtype: torch.dtype = torch.float64,
        uncertainty: bool = True,
        device: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, Path)):
            from potforge.model.io import load_model

            model = load_model(model, dtype=dtype)
        if device is not None:
            from potforge.devices import resolve_device

            model = model.to(resolve_device(device))
        self.model = model.to(dtype)
        self.uncertainty = uncertainty

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        want_stress = "stress" in properties
        periodic = bool(self.atoms.pbc.all())
        if want_stress and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        batch = atoms_to_batch([self.atoms], self.model)
        pred = self.model.evaluate(
            batch, forces=True, member_forces=self.uncertainty, stress=periodic and (want_stress or self.uncertainty)
        )
        energy = float(pred.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": pred.forces.detach().cpu().numpy().astype(np.float64),
            "energy_std": float(pred.energy_std[0]),
            "member_energies": pred.member_energies[:, 0].detach().cpu().numpy().astype(np.float64),
        }
        if pred.stress is not None:
            s = pred.stress[0].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if isinstance(pred, MemberPrediction):
            self.results["member_forces"] = pred.member_forces.detach().cpu().numpy().astype(np.float64)
            self.results["force_std"] = pred.force_std.detach().cpu().numpy().astype(np.float64)


def predict_frames(
    model: ANIEnsemble,
    frames: Sequence[Atoms],
    max_atoms_per_batch: int = 4000,
    progress=None,
) -> list[Atoms]:
    """Evaluate many structures in batches; return copies carrying the model's results.

    Each returned frame has a single-point calculator with energy, free_energy, forces and (for
    fully periodic cells) stress, and in ``info``/``arrays`` the ensemble's uncertainty:
    ``info['energy_std']`` (eV), ``info['member_energies']`` (eV, one per member),
    ``arrays['force_std']`` (eV/Å per atom). ``progress(n)`` is called after each batch.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    out: list[Atoms] = []
    start = 0
    while start < len(frames):
        stop, n_atoms = start, 0
        while stop < len(frames) and (stop == start or n_atoms + len(frames[stop]) <= max_atoms_per_batch):
            n_atoms += len(frames[stop])
            stop += 1
        chunk = frames[start:stop]
        batch = atoms_to_batch(chunk, model)
        periodic = [bool(a.pbc.all()) for a in chunk]
        pred = model.evaluate(batch, forces=True, member_forces=True, stress=any(periodic))
        offset = 0
        for k, atoms in enumerate(chunk):
            n = len(atoms)
            result = atoms.copy()
            for key in ("energy_std", "member_energies", "force_std"):
                result.info.pop(key, None)
            forces = pred.forces[offset : offset + n].cpu().numpy().astype(np.float64)
            props = {"energy": float(pred.energy[k]), "free_energy": float(pred.energy[k]), "forces": forces}
            if periodic[k] and pred.stress is not None:
                s = pred.stress[k].cpu().numpy().astype(np.float64)
                props["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
            result.calc = SinglePointCalculator(result, **props)
            result.info["energy_std"] = float(pred.energy_std[k])
            result.info["member_energies"] = pred.member_energies[:, k].cpu().numpy().astype(np.float64)
            result.arrays["force_std"] = pred.force_std[offset : offset + n].cpu().numpy().astype(np.float64)
            out.append(result)
            offset += n
        if progress is not None:
            progress(len(chunk))
        start = stop
    return out
