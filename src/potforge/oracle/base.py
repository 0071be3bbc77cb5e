"""The oracle interface: a cell goes in; energy, forces and stress (or a typed failure) come out.

An :class:`Oracle` is a *name plus validated settings*; it is plain data, picklable and
hashable, so it can travel to a worker process or a Parsl task, which builds the actual ASE
calculator there. Energies are the force-consistent (free) energy, so that forces are exactly
-dE/dr of the labelled energy, which is what training assumes. Units: eV, eV/Å, eV/Å³ (ASE's
Voigt order xx, yy, zz, yz, xz, xy and sign convention).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculatorSetupError, PropertyNotImplementedError, SCFError
from pydantic import BaseModel, ConfigDict

from potforge.errors import PotforgeError


class OracleFailure(PotforgeError):
    """A labelling attempt that produced no usable result. ``kind`` names the failure class."""

    kind: ClassVar[str] = "failure"


class OracleSetupError(OracleFailure):
    """The calculator could not be set up (bad settings, missing code or pseudopotential)."""

    kind = "setup"


class SCFNotConverged(OracleFailure):
    """The self-consistent field did not converge."""

    kind = "scf"


class OracleCrashed(OracleFailure):
    """The code failed for another reason (exception, non-zero exit, killed process)."""

    kind = "crashed"


class OracleTimeout(OracleFailure):
    """The calculation exceeded its wall-time limit and was killed."""

    kind = "timeout"


class InvalidResult(OracleFailure):
    """The code returned something unusable: non-finite numbers or wrong shapes."""

    kind = "invalid"


FAILURE_KINDS: dict[str, type[OracleFailure]] = {
    cls.kind: cls for cls in (OracleSetupError, SCFNotConverged, OracleCrashed, OracleTimeout, InvalidResult)
}


@dataclass
class Label:
    """One oracle result. energy eV (force-consistent), forces (N, 3) eV/Å, stress (6,) eV/Å³
    (Voigt, ASE sign) or None for non-periodic cells; info: timing and code details."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


def validate_label(label: Label, n_atoms: int, periodic: bool, force_sum_tol: float = 1e-2) -> Label:
    """Check shapes and finiteness; raise :class:`InvalidResult`. Warns (does not fail) when the
    forces of a periodic cell do not sum to ~0 eV/Å (a sign of an unconverged calculation)."""
    if not isinstance(label.energy, float) or not math.isfinite(label.energy):
        raise InvalidResult(f"energy is not a finite number: {label.energy!r}")
    forces = np.asarray(label.forces, dtype=np.float64)
    if forces.shape != (n_atoms, 3):
        raise InvalidResult(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if not np.isfinite(forces).all():
        raise InvalidResult("forces contain non-finite values")
    stress = None
    if label.stress is not None:
        stress = np.asarray(label.stress, dtype=np.float64)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if stress.shape != (6,) or not np.isfinite(stress).all():
            raise InvalidResult(f"stress must be 6 finite numbers, got shape {stress.shape}")
    elif periodic:
        raise InvalidResult("no stress returned for a periodic cell")
    drift = float(np.linalg.norm(forces.sum(0)))
    if periodic and drift > force_sum_tol * max(1.0, math.sqrt(n_atoms)):
        warnings.warn(f"oracle forces sum to {drift:.3g} eV/Å, not ~0", RuntimeWarning, stacklevel=2)
    return Label(energy=float(label.energy), forces=forces, stress=stress, info=dict(label.info))


def _digest(description: dict[str, Any]) -> str:
    blob = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return "o" + hashlib.sha256(blob.encode()).hexdigest()[:16]


class Oracle:
    """A reference method: ``name`` plus validated ``settings`` (a pydantic model).

    Subclasses set ``name`` and ``Settings`` and implement :meth:`make_calculator`; they may
    override :meth:`classify` to map their code's exceptions onto the failure kinds.
    """

    name: ClassVar[str] = ""

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, settings: BaseModel | dict | None = None) -> None:
        if settings is None or isinstance(settings, dict):
            try:
                settings = self.Settings(**(settings or {}))
            except Exception as exc:  # pydantic's ValidationError, reworded as one line
                raise OracleSetupError(f"invalid settings for oracle {self.name!r}: {_one_line(exc)}") from None
        self.settings = settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.model_dump()})"

    # --- identity ---------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """JSON-able description from which :func:`potforge.oracle.get_oracle` rebuilds it."""
        return {"name": self.name, "settings": self.settings.model_dump(mode="json")}

    #: settings that say how the code is launched, not what it computes (MPI ranks, paths):
    #: left out of :meth:`settings_hash`, so changing them keeps the oracle's labels
    launch_settings: ClassVar[frozenset[str]] = frozenset()

    def input_files(self) -> dict[str, Path]:
        """Files whose contents define the method (pseudopotentials, potential tables): their
        contents, not their paths, go into :meth:`settings_hash`."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What this oracle computes: its settings without :attr:`launch_settings`, and the
        SHA-256 of each of :meth:`input_files` (a missing file reads as ``missing``; such an
        oracle cannot label anything until it exists, see :meth:`check`)."""
        settings = self.settings.model_dump(mode="json")
        for key in self.launch_settings:
            settings.pop(key, None)
        identity: dict[str, Any] = {"name": self.name, "settings": settings}
        files = {}
        for key, path in sorted(self.input_files().items()):
            path = Path(path)
            files[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if files:
            identity["files"] = files
        return identity

    def settings_hash(self) -> str:
        """Stable hash of :meth:`identity`: labels with equal hashes are comparable.
        Prefixed with a letter: about one hex digest in 700 (``70e0235559946268``) reads as a
        number, which ASE's database refuses to store as a string. For an oracle without launch
        settings or input files this is the hash of :meth:`spec`, as it always was. Computed
        once per instance: the input files are read once, not at every frame queued."""
        cached = self.__dict__.get("_settings_hash")
        if cached is None:
            cached = self.__dict__["_settings_hash"] = _digest(self.identity())
        return cached

    def legacy_hashes(self) -> list[str]:
        """Hashes this oracle's labels were stored under before :meth:`identity` existed (the
        hash of the whole :meth:`spec`, launch command and paths included); a dataset that holds
        them adopts them (:meth:`potforge.data.store.DatasetStore.adopt_labels`)."""
        old = _digest(self.spec())
        return [] if old == self.settings_hash() else [old]

    # --- work -------------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early (:class:`OracleSetupError`) if the oracle cannot run here."""

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        raise NotImplementedError

    def classify(self, exc: BaseException) -> OracleFailure:
        """Map an exception raised by the calculator onto a failure kind."""
        if isinstance(exc, OracleFailure):
            return exc
        if isinstance(exc, SCFError) or "converge" in str(exc).lower():
            return SCFNotConverged(_one_line(exc))
        if isinstance(exc, (CalculatorSetupError, FileNotFoundError, ImportError)):
            return OracleSetupError(_one_line(exc))
        return OracleCrashed(f"{type(exc).__name__}: {_one_line(exc)}")

    def compute(self, atoms: Atoms, directory: Path | str = ".") -> Label:
        """Label one structure in this process (see :mod:`potforge.oracle.runner` for isolation)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atoms = atoms.copy()
        periodic = bool(atoms.pbc.all())
        try:
            atoms.calc = self.make_calculator(atoms, directory)
            forces = atoms.get_forces()
            try:
                energy = atoms.get_potential_energy(force_consistent=True)
            except PropertyNotImplementedError:  # codes without smearing report only one energy
                energy = atoms.get_potential_energy()
            stress = atoms.get_stress(voigt=True) if periodic else None
        except Exception as exc:
            raise self.classify(exc) from None
        label = Label(
            energy=float(energy), forces=np.array(forces), stress=None if stress is None else np.array(stress)
        )
        return validate_label(label, len(atoms), periodic)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
