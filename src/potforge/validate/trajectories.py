"""MD of one side of a comparison, for the dynamic benchmarks (liquid, melting, heat–cool) and
the FCC/Melt dataset, on potforge's one MD engine (:mod:`potforge.md`).

Each side gets a force provider (:func:`md_forces`): a potforge model evaluates every system of
a run in one batched call (a float32 copy: MD does not need float64, and the evaluator's float64
model is left alone); a reference oracle runs in an isolated oracle process with a timeout
(:class:`~potforge.md.OracleForces`), so a hung reference code cannot hang a report; a plain
calculator factory runs in this process. Reference single points (:func:`label_frames`) go through
an isolated oracle process too, cached on disk.

A benchmark builds its states with :func:`start` and :func:`fork` (each a new trajectory with
its own random stream and identity) and runs them with :func:`run`; a trajectory that blows up
becomes a :class:`~potforge.validate.core.BenchmarkError`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from potforge import durable, md
from potforge.analysis import cna_types
from potforge.md.schedules import BarostatMode, Schedule
from potforge.validate.core import BenchmarkError, Evaluator, ModelEvaluator, OracleEvaluator, structure_key
from potforge.validate.settings import ValidationSettings

#: identities of validation trajectories: unique in this process, so no two share a neighbour list
_uids = itertools.count(1)


def md_forces(evaluator: Evaluator) -> md.ForceProvider:
    """The force provider of one side (one per evaluator, kept in its memo)."""
    cached = evaluator.memo.get("md_forces")
    if cached is not None:
        return cached
    if isinstance(evaluator, ModelEvaluator):
        provider: md.ForceProvider = md.EnsembleForces(copy.deepcopy(evaluator.model).to(torch.float32))
    elif isinstance(evaluator, OracleEvaluator):
        import tempfile

        workdir = (
            evaluator.workdir / "md" if evaluator.workdir is not None else Path(tempfile.mkdtemp(prefix="potforge-md-"))
        )
        provider = md.OracleForces(evaluator.oracle, workdir, evaluator.timeout_s)
    else:
        workdir = evaluator.workdir / "md" if evaluator.workdir is not None else None
        provider = md.CalculatorForces(evaluator.calculator, workdir)
    evaluator.memo["md_forces"] = provider
    return provider


def md_is_cheap(evaluator: Evaluator, policy: str) -> bool:
    """Whether to run MD with ``evaluator`` as the reference: ``policy`` 'always', 'never' or
    'auto' (EMT, EAM, plain calculators and models: yes; DFT oracles: no)."""
    if policy in ("always", "never"):
        return policy == "always"
    if isinstance(evaluator, OracleEvaluator):
        return evaluator.oracle.name in ("emt", "eam")
    return True


def integrator(s: ValidationSettings) -> md.Langevin:
    return md.Langevin(s.md_timestep_fs, s.md_friction_per_fs, s.md_barostat_tau_fs)


def steps(fs: float, s: ValidationSettings, at_least: int = 0) -> int:
    """MD steps in ``fs`` femtoseconds."""
    return max(round(fs / s.md_timestep_fs), at_least)


def fcc_supercell(element: str, a_A: float, reps: tuple[int, int, int]) -> Atoms:
    """Conventional cubic fcc cell repeated ``reps`` times (4·nx·ny·nz atoms)."""
    from ase.build import bulk

    return bulk(element, "fcc", a=a_A, cubic=True).repeat(reps)


def _key(seed: int | Sequence[int]) -> int:
    return md.stream_key(*((seed,) if isinstance(seed, int) else seed))


def start(
    atoms: Atoms,
    forces: md.ForceProvider,
    temperature_K: float | Schedule,
    seed: int | Sequence[int],
    *,
    pressure_GPa: float | Schedule | None = None,
    barostat: BarostatMode = "iso",
    fixed: np.ndarray | None = None,
) -> md.MDState:
    """A one-system state from ``atoms`` with Maxwell–Boltzmann momenta at T(0) and its forces."""
    drive = md.Drive.of(temperature_K, pressure_GPa, barostat)
    try:
        return md.init([atoms], [drive], [_key(seed)], forces, uids=[next(_uids)], fixed=[fixed])
    except md.UnstableSystems as exc:
        raise BenchmarkError(f"MD became unstable at its start: {exc}") from None


def fork(
    state: md.MDState,
    b: int,
    temperature_K: float | Schedule,
    seed: int | Sequence[int],
    *,
    pressure_GPa: float | Schedule | None = None,
    barostat: BarostatMode = "iso",
    fixed: np.ndarray | bool | None = False,
    thermalize: bool = False,
) -> md.MDState:
    """System ``b`` of ``state`` as a new trajectory (own random stream and identity; clock and
    momenta kept unless ``thermalize``) driven at a new temperature and pressure. ``fixed``:
    a new held-atom mask, None for none, False to keep the current one."""
    one = state.select([b])
    drive = md.Drive.of(temperature_K, pressure_GPa, barostat)
    changes: dict = {"drives": (drive,), "keys": torch.tensor([_key(seed)]), "uids": torch.tensor([next(_uids)])}
    if fixed is not False:
        mask = np.zeros(one.n_atoms, bool) if fixed is None else np.asarray(fixed, bool)
        changes["fixed"] = torch.as_tensor(mask)
        changes["momenta"] = one.momenta * (~changes["fixed"]).to(one.dtype)[:, None]
    one = one.replace(**changes)
    return md.thermalize(one) if thermalize else one


def run(
    state: md.MDState,
    forces: md.ForceProvider,
    integ: md.Langevin,
    n_steps: int,
    *,
    every: int = 0,
    callback: Callable[[int, md.MDState], None] | None = None,
    progress: Callable[[int], None] | None = None,
    label: str = "MD",
) -> md.MDState:
    """:func:`potforge.md.run` from the forces of ``state`` as given (a fork may have moved its
    atoms), a blown-up trajectory reported as a :class:`BenchmarkError`."""
    try:
        state = md.evaluate(state, forces, stress=True)[0]
        # every step's stress: the benchmarks watch the pressure
        return md.run(state, forces, integ, n_steps, every=every, callback=callback, progress=progress, stress=True)
    except md.UnstableSystems as exc:
        raise BenchmarkError(f"{label} became unstable: {exc}") from None


def solid_fraction(state: md.MDState, b: int = 0, mask: np.ndarray | None = None) -> float:
    """Fraction of system ``b``'s atoms (all, or those in ``mask``) that CNA calls crystalline
    (fcc, hcp, bcc)."""
    crystalline = np.isin(cna_types(state.to_atoms(b)), (1, 2, 3))
    return float(crystalline.mean() if mask is None else crystalline[mask].mean())


# --- single points with forces -----------------------------------------------------------------
@dataclass
class Labels:
    """Energy (eV), forces (N, 3) eV/Å and virial stress (6,) eV/Å³ (Voigt, ASE sign) of a frame."""

    energy_eV: float
    forces_eV_A: np.ndarray
    stress_eV_A3: np.ndarray


def label_frames(side: Evaluator, frames: Sequence[Atoms]) -> list[Labels]:
    """Energies, forces and stress of ``frames`` by one side: batched for models; an oracle in
    an isolated oracle process (with the side's timeout), cached on disk under the side's
    workdir (``labels/``) when it has one, so an interrupted run with an expensive reference
    resumes."""
    if isinstance(side, ModelEvaluator):
        from potforge.model import predict_frames

        out = []
        for a in predict_frames(side.model, list(frames), side.max_atoms_per_batch):
            r = a.calc.results
            out.append(Labels(float(r["energy"]), np.asarray(r["forces"], float), np.asarray(r["stress"], float)))
        return out
    import tempfile

    from potforge.oracle import OracleFailure
    from potforge.oracle.session import OracleSession

    cache = None if side.workdir is None else side.workdir / "labels"
    scratch = tempfile.TemporaryDirectory(prefix="potforge-labels-") if side.workdir is None else None
    base = side.workdir if side.workdir is not None else Path(scratch.name)
    session = (
        OracleSession(side.oracle, base / "session", side.timeout_s) if isinstance(side, OracleEvaluator) else None
    )
    out = []
    try:
        for atoms in frames:
            key = structure_key(atoms, "label")
            path = None if cache is None else cache / f"{key}.json"
            recorded = None if path is None else durable.read_json(path)
            if recorded is not None:
                out.append(Labels(recorded["energy"], np.asarray(recorded["forces"]), np.asarray(recorded["stress"])))
                continue
            if session is not None:
                try:
                    lab = session.compute(atoms)
                except OracleFailure as exc:
                    raise BenchmarkError(f"{side.label}: single point failed: {exc.kind}: {exc}") from None
                labels = Labels(lab.energy, np.asarray(lab.forces), np.asarray(lab.stress))
            else:
                work = atoms.copy()
                work.calc = side.calculator(work, base / f"label-{key[:12]}")
                labels = Labels(float(work.get_potential_energy()), work.get_forces(), work.get_stress(voigt=True))
            side.n_calculations += 1
            if path is not None:
                durable.write_json(path, {"energy": labels.energy_eV, "forces": labels.forces_eV_A.tolist(),
                                          "stress": labels.stress_eV_A3.tolist()})  # fmt: skip
            out.append(labels)
    finally:
        if session is not None:
            session.close()
        if scratch is not None:
            scratch.cleanup()
    return out
