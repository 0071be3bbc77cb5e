"""Built-in oracles: EMT (default), EAM files, GPAW, Quantum ESPRESSO, and any ASE calculator by
import path. Settings are validated on construction; units in names are eV, Å, Ry only where
a code's own input demands it (converted here, at the edge)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Literal

from ase import Atoms
from ase.calculators.calculator import Calculator, kptdensity2monkhorstpack
from ase.units import Ry
from pydantic import BaseModel, ConfigDict, Field

from potforge.oracle.base import Oracle, OracleFailure, OracleSetupError, SCFNotConverged, _one_line


class EMTOracle(Oracle):
    """ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O crudely): the
    built-in oracle that runs anywhere in milliseconds. No settings."""

    name = "emt"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        from ase.calculators.emt import EMT

        return EMT()


class EAMOracle(Oracle):
    """Embedded-atom potentials from ``.eam.alloy`` / ``.eam.fs`` / ``.eam`` files (ASE's EAM)."""

    name = "eam"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        potential: str = Field(..., description="path of an .eam.alloy, .eam.fs or .eam file")

    launch_settings = frozenset({"potential"})  # the file's contents identify the method, not its path

    def input_files(self) -> dict[str, Path]:
        return {"potential": Path(self.settings.potential)}

    def check(self) -> None:
        if not Path(self.settings.potential).is_file():
            raise OracleSetupError(f"EAM potential file {self.settings.potential} does not exist")

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        from ase.calculators.eam import EAM

        self.check()
        try:
            return EAM(potential=str(Path(self.settings.potential).resolve()))
        except Exception as exc:
            raise OracleSetupError(f"cannot read EAM potential {self.settings.potential}: {_one_line(exc)}") from None


class GPAWOracle(Oracle):
    """GPAW plane-wave DFT (extra ``potforge[gpaw]``). k-points from a density in points per Å⁻¹
    (ASE's convention); smearing width in eV; energies are the force-consistent free energy."""

    name = "gpaw"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        xc: str = "PBE"
        cutoff_eV: float = Field(400.0, gt=0, description="plane-wave cutoff, eV")
        kpoint_density_per_A: float = Field(3.5, gt=0, description="k-points per Å⁻¹ (ASE kptdensity)")
        kpts: tuple[int, int, int] | None = Field(None, description="explicit Monkhorst-Pack grid (overrides density)")
        smearing: Literal["fermi-dirac", "marzari-vanderbilt", "methfessel-paxton"] = "marzari-vanderbilt"
        smearing_width_eV: float = Field(0.1, gt=0)
        maxiter: int = Field(300, gt=0)
        energy_convergence_eV: float = Field(1e-6, gt=0, description="per valence electron")
        parallel_domain: int | None = None

    launch_settings = frozenset({"parallel_domain"})  # how the work is split, not what is computed

    def check(self) -> None:
        try:
            import gpaw  # noqa: F401
        except ImportError:
            raise OracleSetupError("GPAW is not installed: pip install 'potforge[gpaw]'") from None

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        self.check()
        from gpaw import GPAW, PW

        s = self.settings
        kpts = s.kpts or kptdensity2monkhorstpack(atoms, kptdensity=s.kpoint_density_per_A, even=False)
        return GPAW(
            mode=PW(s.cutoff_eV),
            xc=s.xc,
            kpts=tuple(int(k) for k in kpts),
            occupations={"name": s.smearing, "width": s.smearing_width_eV},
            maxiter=s.maxiter,
            convergence={"energy": s.energy_convergence_eV},
            txt=str(directory / "gpaw.txt"),
        )

    def classify(self, exc: BaseException) -> OracleFailure:
        if type(exc).__name__ == "KohnShamConvergenceError":
            return SCFNotConverged(_one_line(exc))
        return super().classify(exc)


class EspressoOracle(Oracle):
    """Quantum ESPRESSO ``pw.x`` through ASE. ``pseudopotentials`` maps elements to file names in
    ``pseudo_dir``; the cutoff is given in eV and converted to Ry for pw.x."""

    name = "espresso"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        command: str = Field("pw.x", description="pw.x command line, e.g. 'mpirun -np 4 pw.x'")
        pseudo_dir: str = Field(..., description="directory holding the pseudopotential files")
        pseudopotentials: dict[str, str] = Field(..., description="element -> pseudopotential file name")
        cutoff_eV: float = Field(540.0, gt=0, description="wavefunction cutoff, eV (converted to Ry)")
        density_cutoff_factor: float = Field(8.0, gt=0, description="ecutrho / ecutwfc")
        kpoint_density_per_A: float = Field(3.5, gt=0)
        kpts: tuple[int, int, int] | None = Field(None, description="explicit Monkhorst-Pack grid (overrides density)")
        smearing: Literal["mv", "mp", "fd", "gaussian"] = "mv"
        smearing_width_eV: float = Field(0.1, gt=0)
        conv_thr_Ry: float = Field(1e-8, gt=0)
        extra_input: dict[str, dict[str, Any]] = Field(default_factory=dict, description="more pw.x namelist entries")

    # how pw.x is started and where the files lie do not change a label; the files' contents do
    launch_settings = frozenset({"command", "pseudo_dir", "pseudopotentials"})

    def input_files(self) -> dict[str, Path]:
        s = self.settings
        return {f"pseudopotential {el}": Path(s.pseudo_dir) / name for el, name in s.pseudopotentials.items()}

    def check(self) -> None:
        s = self.settings
        exe = s.command.split()[-1] if s.command.strip() else "pw.x"
        if shutil.which(exe) is None:
            raise OracleSetupError(f"Quantum ESPRESSO executable {exe!r} not found on PATH")
        for element, fname in s.pseudopotentials.items():
            if not (Path(s.pseudo_dir) / fname).is_file():
                raise OracleSetupError(f"pseudopotential for {element} not found: {Path(s.pseudo_dir) / fname}")

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        from ase.calculators.espresso import Espresso, EspressoProfile

        self.check()
        s = self.settings
        missing = sorted(set(atoms.get_chemical_symbols()) - set(s.pseudopotentials))
        if missing:
            raise OracleSetupError(f"no pseudopotential given for {', '.join(missing)}")
        input_data: dict[str, dict[str, Any]] = {
            "control": {"tprnfor": True, "tstress": True},
            "system": {
                "ecutwfc": s.cutoff_eV / Ry,
                "ecutrho": s.cutoff_eV * s.density_cutoff_factor / Ry,
                "occupations": "smearing",
                "smearing": s.smearing,
                "degauss": s.smearing_width_eV / Ry,
            },
            "electrons": {"conv_thr": s.conv_thr_Ry},
        }
        for section, entries in s.extra_input.items():
            input_data.setdefault(section, {}).update(entries)
        kpts = s.kpts or kptdensity2monkhorstpack(atoms, kptdensity=s.kpoint_density_per_A, even=False)
        profile = EspressoProfile(command=s.command, pseudo_dir=s.pseudo_dir)
        return Espresso(
            profile=profile,
            directory=str(directory),
            pseudopotentials=s.pseudopotentials,
            input_data=input_data,
            kpts=tuple(int(k) for k in kpts),
        )


class ImportedOracle(Oracle):
    """Any ASE calculator by import path (``package.module:ClassName`` or ``package.module.ClassName``)
    constructed with ``kwargs``."""

    name = "python"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(..., description="import path of an ASE calculator class or factory")
        kwargs: dict[str, Any] = Field(default_factory=dict)

    def _factory(self):
        path = self.settings.path
        module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise OracleSetupError(f"cannot import calculator {path!r}: {_one_line(exc)}") from None

    def check(self) -> None:
        self._factory()

    def make_calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        try:
            return self._factory()(**self.settings.kwargs)
        except OracleFailure:
            raise
        except TypeError as exc:
            raise OracleSetupError(f"bad arguments for {self.settings.path}: {_one_line(exc)}") from None


BUILTIN: dict[str, type[Oracle]] = {cls.name: cls for cls in (EMTOracle, EAMOracle, GPAWOracle, EspressoOracle)}
