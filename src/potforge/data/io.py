"""Moving frames in and out of a dataset: extended XYZ (both ways) and the ANI HDF5 layout of the
ANI-Al data release (in), converted from Hartree and Hartree/Å to eV and eV/Å at the edge."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.io import read, write

from potforge.data.store import DatasetStore, Provenance
from potforge.errors import DataError
from potforge.hashing import structure_hash
from potforge.units import HARTREE_EV


def import_extxyz(store: DatasetStore, path: str | Path, source: str = "import", oracle: str | None = None) -> int:
    """Add every frame of ``path`` (any ASE-readable file with energies and forces). Frames are
    tagged with ``oracle`` (default ``imported:<file name>``). Returns how many were new."""
    path = Path(path)
    try:
        frames = read(path, index=":")
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    name = oracle or f"imported:{path.name}"
    added = 0
    with store.db:
        for k, atoms in enumerate(frames):
            if atoms.calc is None or "energy" not in atoms.calc.results or "forces" not in atoms.calc.results:
                raise DataError(f"{path}: frame {k} has no energy and forces")
            prov = Provenance(source=source, trajectory=f"{path.name}:{k}")
            added += store.add_labelled(atoms, prov, name, oracle_hash=name) is not None
    return added


def export_extxyz(store: DatasetStore, path: str | Path, **query) -> int:
    """Write labelled frames matching ``query`` (e.g. ``split="test"``) to extended XYZ."""
    frames = list(store.frames(**query))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    return len(frames)


def _species_to_numbers(species: np.ndarray) -> np.ndarray:
    if species.dtype.kind in "iu":
        return species.astype(int)
    symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in species.reshape(-1)]
    try:
        return np.array([atomic_numbers[s] for s in symbols]).reshape(species.shape)
    except KeyError as exc:
        raise DataError(f"unknown element {exc} in ANI HDF5 species") from None


def read_ani_h5(path: str | Path) -> list[Atoms]:
    """Frames of an ANI-style HDF5 file: every group holding ``coordinates`` (conf, atoms, 3) Å,
    ``species`` (atoms,) or (conf, atoms), ``energy`` (conf,) Ha, ``force`` (conf, atoms, 3)
    Ha/Å, and optionally ``cell`` (conf, 3, 3) Å (periodic when present)."""
    frames: list[Atoms] = []
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot open HDF5 file {path}: {exc}") from None

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Group) or "coordinates" not in obj:
            return
        missing = [
            k for k in ("species", "energy", "force") if k not in obj and not (k == "energy" and "energies" in obj)
        ]
        if missing:
            raise DataError(f"{path}:{name} lacks {', '.join(missing)}")
        coords = np.asarray(obj["coordinates"], dtype=np.float64)
        numbers = _species_to_numbers(np.asarray(obj["species"]))
        energy = np.asarray(obj["energy"] if "energy" in obj else obj["energies"], dtype=np.float64) * HARTREE_EV
        forces = np.asarray(obj["force"], dtype=np.float64) * HARTREE_EV
        cells = np.asarray(obj["cell"], dtype=np.float64) if "cell" in obj else None
        for c in range(coords.shape[0]):
            z = numbers[c] if numbers.ndim == 2 else numbers
            keep = z > 0  # ANI files pad with species 0/-1
            cell = cells[c] if cells is not None else np.zeros((3, 3))
            atoms = Atoms(numbers=z[keep], positions=coords[c][keep], cell=cell, pbc=cells is not None)
            atoms.calc = SinglePointCalculator(atoms, energy=float(energy[c]), forces=forces[c][keep])
            atoms.info["h5_group"] = name
            frames.append(atoms)

    with h5:
        h5.visititems(visit)
    if not frames:
        raise DataError(f"{path}: no groups with coordinates/species/energy/force found")
    return frames


def import_ani_h5(store: DatasetStore, path: str | Path, source: str = "import", oracle: str | None = None) -> int:
    """Add the frames of an ANI HDF5 file (see :func:`read_ani_h5`). Returns how many were new."""
    path = Path(path)
    name = oracle or f"imported:{path.name}"
    added = 0
    with store.db:
        for atoms in read_ani_h5(path):
            prov = Provenance(source=source, trajectory=f"{atoms.info['h5_group']}:{structure_hash(atoms)[:8]}")
            added += store.add_labelled(atoms, prov, name, oracle_hash=name) is not None
    return added
