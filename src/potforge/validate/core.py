"""The two sides of a comparison, behind one interface: an :class:`Evaluator` gives energies
(and stress, ensemble member energies) of structures, and relaxes structures.

Three kinds: :class:`ModelEvaluator` (a potforge ensemble, batched through
:func:`potforge.model.predict_frames`), :class:`OracleEvaluator` (a reference oracle: EMT, EAM,
GPAW, ..., one fresh calculator per structure, as GPAW needs for its k-points) and
:class:`CalculatorEvaluator` (any ASE calculator factory, e.g. EMT standing in for a model).

Every result is cached per structure (exact bits of numbers, positions, cell, pbc) and task, so a
structure that two benchmarks share is computed once per run; an oracle's cache can also live on
disk, so an interrupted GPAW run resumes without repeating calculations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator, PropertyNotImplementedError

from potforge import durable
from potforge.errors import PotforgeError

#: A factory of ASE calculators: (atoms, working directory) -> calculator for that structure.
CalculatorFactory = Callable[[Atoms, Path], Calculator]


class BenchmarkError(PotforgeError):
    """A benchmark could not produce a result (a required calculation failed or did not converge)."""


def structure_key(atoms: Atoms, task: str) -> str:
    """Hash of a structure (numbers, positions, cell, pbc, exact to the bit) and a task name."""
    h = hashlib.sha256(task.encode())
    for arr in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:24]


@dataclass
class Evaluation:
    """Result of one single point or relaxation. energy eV (force-consistent, whole cell; NaN when
    failed), stress (6,) eV/Å³ Voigt ASE sign (periodic single points), member_energies (M,) eV,
    positions (N, 3) Å after relaxation."""

    energy_eV: float
    n_atoms: int
    stress_eV_A3: np.ndarray | None = None
    member_energies_eV: np.ndarray | None = None
    positions_A: np.ndarray | None = None
    converged: bool = True
    steps: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and np.isfinite(self.energy_eV)

    @property
    def energy_per_atom_eV(self) -> float:
        return self.energy_eV / self.n_atoms

    def to_json(self) -> dict[str, Any]:
        def arr(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "energy_eV": self.energy_eV if np.isfinite(self.energy_eV) else None,
            "n_atoms": self.n_atoms,
            "stress_eV_A3": arr(self.stress_eV_A3),
            "member_energies_eV": arr(self.member_energies_eV),
            "positions_A": arr(self.positions_A),
            "converged": self.converged,
            "steps": self.steps,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evaluation:
        def arr(a):
            return None if a is None else np.asarray(a, dtype=float)

        return cls(
            energy_eV=float("nan") if d["energy_eV"] is None else float(d["energy_eV"]),
            n_atoms=int(d["n_atoms"]),
            stress_eV_A3=arr(d["stress_eV_A3"]),
            member_energies_eV=arr(d["member_energies_eV"]),
            positions_A=arr(d["positions_A"]),
            converged=bool(d["converged"]),
            steps=int(d["steps"]),
            error=d["error"],
        )


def require(ev: Evaluation, what: str, side: str) -> Evaluation:
    """``ev`` if it succeeded, else :class:`BenchmarkError` naming the calculation and side."""
    if not ev.ok:
        raise BenchmarkError(f"{side}: {what} failed: {ev.error or 'non-finite energy'}")
    return ev


class Evaluator:
    """One side of the comparison. Subclasses implement :meth:`calculator` and may override
    :meth:`_compute_single_points` (batching) and :meth:`members` (ensemble spread).

    label: name used in plots and the report. workdir: where calculators may write files
    (one subfolder per calculation). persist: keep the cache as JSON files under workdir/cache.
    """

    kind = "calculator"
    #: wall-time limit (s) of one reference calculation run in an isolated oracle process
    timeout_s: float | None = 3600.0

    def __init__(self, label: str, workdir: Path | None = None, persist: bool = False) -> None:
        self.label = label
        self.workdir = Path(workdir) if workdir is not None else None
        self.persist = persist and self.workdir is not None
        self.memo: dict[Any, Any] = {}  # derived quantities shared by benchmarks (fcc equilibrium, ...)
        self._cache: dict[str, Evaluation] = {}
        self.n_calculations = 0
        self.n_cache_hits = 0

    def close(self) -> None:
        """Stop whatever this side started (oracle processes of its MD and single points)."""
        for value in list(self.memo.values()):
            close = getattr(value, "close", None)
            if callable(close):
                close()
        self.memo.clear()

    # --- to implement ------------------------------------------------------------------------
    def calculator(self, atoms: Atoms, directory: Path) -> Calculator:
        """A calculator for ``atoms`` (used by relaxations and the default single points)."""
        raise NotImplementedError

    def members(self, frames: Sequence[Atoms]) -> list[np.ndarray | None]:
        """Ensemble member energies (M,) eV of each structure, or None for non-ensembles."""
        return [None] * len(frames)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the report."""
        return {"label": self.label, "kind": self.kind}

    def _failure_message(self, exc: Exception) -> str | None:
        """A one-line message if ``exc`` is a calculation failure to record; None re-raises it."""
        if isinstance(exc, (PotforgeError, CalculationFailed)):
            return f"{type(exc).__name__}: {exc}"
        return None

    def _compute_single_points(self, frames: Sequence[Atoms]) -> list[Evaluation]:
        out = []
        for atoms in frames:
            work = atoms.copy()
            try:
                work.calc = self.calculator(work, self._directory("sp", structure_key(atoms, "sp")))
                energy = _energy(work)
                stress = work.get_stress(voigt=True) if work.pbc.all() else None
            except Exception as exc:
                msg = self._failure_message(exc)
                if msg is None:
                    raise
                out.append(Evaluation(float("nan"), len(atoms), error=msg))
                continue
            members = work.calc.results.get("member_energies")
            out.append(
                Evaluation(
                    float(energy),
                    len(atoms),
                    stress_eV_A3=None if stress is None else np.asarray(stress, dtype=float),
                    member_energies_eV=None if members is None else np.asarray(members, dtype=float),
                )
            )
        return out

    # --- cached public interface -------------------------------------------------------------
    def single_points(self, frames: Sequence[Atoms]) -> list[Evaluation]:
        """Energy (eV), stress (periodic cells) and member energies of each structure, cached.
        A failed calculation gives an Evaluation with ``error`` set, not an exception."""
        keys = [structure_key(a, "sp") for a in frames]
        missing: dict[str, Atoms] = {}
        for key, atoms in zip(keys, frames, strict=True):
            if self._lookup(key) is None and key not in missing:
                missing[key] = atoms
        if missing:
            results = self._compute_single_points(list(missing.values()))
            for key, ev in zip(missing, results, strict=True):
                self._store(key, ev)
        return [self._cache[k] for k in keys]

    def single_point(self, atoms: Atoms) -> Evaluation:
        return self.single_points([atoms])[0]

    def relax(
        self, atoms: Atoms, *, fmax_eV_A: float, max_steps: int, fix_inplane: bool = False
    ) -> tuple[Evaluation, Atoms]:
        """Relax positions at fixed cell with L-BFGS (``fix_inplane``: only z moves). Returns the
        evaluation of the relaxed structure and the relaxed structure. Cached per input structure."""
        from ase.constraints import FixCartesian
        from ase.optimize import LBFGS

        task = f"relax:{'z' if fix_inplane else 'xyz'}:{fmax_eV_A:g}:{max_steps}"
        key = structure_key(atoms, task)
        ev = self._lookup(key)
        if ev is None:
            work = atoms.copy()
            directory = self._directory("relax", key)
            try:
                work.calc = self.calculator(work, directory)
                if fix_inplane:
                    work.set_constraint(FixCartesian(range(len(work)), mask=(True, True, False)))
                log = str(directory / "relax.log") if directory is not None and self.persist else None
                opt = LBFGS(work, logfile=log)
                converged = bool(opt.run(fmax=fmax_eV_A, steps=max_steps))
                energy = float(_energy(work))
                ev = Evaluation(
                    energy, len(work), positions_A=work.positions.copy(), converged=converged, steps=opt.nsteps
                )
            except Exception as exc:
                msg = self._failure_message(exc)
                if msg is None:
                    raise
                ev = Evaluation(float("nan"), len(atoms), error=msg)
            if ev.ok:
                relaxed = atoms.copy()
                relaxed.positions = ev.positions_A
                ev.member_energies_eV = self.members([relaxed])[0]
            self._store(key, ev)
        relaxed = atoms.copy()
        if ev.positions_A is not None:
            relaxed.positions = ev.positions_A
        return ev, relaxed

    # --- cache plumbing ----------------------------------------------------------------------
    def _directory(self, kind: str, key: str) -> Path | None:
        """Working folder of one calculation (``kind``: 'sp' or 'relax'), or None without workdir."""
        return None if self.workdir is None else self.workdir / f"{kind}-{key[:12]}"

    def _cache_file(self, key: str) -> Path | None:
        return self.workdir / "cache" / f"{key}.json" if self.persist and self.workdir is not None else None

    def _lookup(self, key: str) -> Evaluation | None:
        if key in self._cache:
            self.n_cache_hits += 1
            return self._cache[key]
        path = self._cache_file(key)
        if path is not None and path.is_file():
            ev = Evaluation.from_json(json.loads(path.read_text()))
            self._cache[key] = ev
            self.n_cache_hits += 1
            return ev
        return None

    def _store(self, key: str, ev: Evaluation) -> None:
        self.n_calculations += 1
        self._cache[key] = ev
        path = self._cache_file(key)
        if path is not None and ev.ok:  # failures are retried on the next run
            durable.write_json(path, ev.to_json())


def _energy(atoms: Atoms) -> float:
    """Force-consistent energy when the calculator has one (as oracles label), else the energy."""
    try:
        return atoms.get_potential_energy(force_consistent=True)
    except PropertyNotImplementedError:
        return atoms.get_potential_energy()


class CalculatorEvaluator(Evaluator):
    """Any ASE calculator factory ``factory(atoms, directory) -> Calculator``. Member energies are
    taken from ``calc.results['member_energies']`` when the calculator provides them."""

    kind = "calculator"

    def __init__(self, factory: CalculatorFactory, label: str, workdir: Path | None = None) -> None:
        super().__init__(label, workdir)
        self.factory = factory

    def calculator(self, atoms: Atoms, directory: Path | None) -> Calculator:
        return self.factory(atoms, directory if directory is not None else Path("."))

    def members(self, frames: Sequence[Atoms]) -> list[np.ndarray | None]:
        return [ev.member_energies_eV for ev in self.single_points(frames)]


class OracleEvaluator(Evaluator):
    """A reference oracle (:mod:`potforge.oracle`): every calculation (single points, each step
    of a relaxation, MD) runs in an isolated oracle process with a wall-time limit
    (:class:`~potforge.oracle.session.OracleSession`), so a hung code cannot hang a report;
    single points use a fresh calculator per structure (as GPAW needs for its k-points)."""

    kind = "oracle"

    def __init__(self, oracle, label: str | None = None, workdir: Path | None = None, persist: bool = False,
                 timeout_s: float | None = 3600.0) -> None:  # fmt: skip
        if workdir is not None and persist:
            base = Path(workdir)
            workdir = base / f"{oracle.name}-{oracle.settings_hash()}"
            for old in oracle.legacy_hashes():  # reference results cached before identity hashes
                legacy = base / f"{oracle.name}-{old}"
                if legacy.is_dir() and not workdir.exists():
                    legacy.rename(workdir)
        super().__init__(label or oracle.name.upper(), workdir, persist)
        self.oracle = oracle
        self.timeout_s = timeout_s

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "oracle": self.oracle.spec()}

    def session(self):
        """The oracle process of this side (started on first use, stopped by :meth:`close`)."""
        from potforge.oracle.session import OracleSession

        session = self.memo.get("session")
        if session is None:
            import tempfile

            base = self.workdir if self.workdir is not None else Path(tempfile.mkdtemp(prefix="potforge-oracle-"))
            session = self.memo["session"] = OracleSession(self.oracle, base / "session", self.timeout_s)
        return session

    def calculator(self, atoms: Atoms, directory: Path | None) -> Calculator:
        from potforge.oracle.session import SessionCalculator

        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        # one calculator per relaxation, kept in the oracle process while it runs
        return SessionCalculator(self.session(), key=str(directory) if directory is not None else None)

    def _failure_message(self, exc: Exception) -> str | None:
        failure = self.oracle.classify(exc)
        return f"{failure.kind}: {failure}"

    def _compute_single_points(self, frames: Sequence[Atoms]) -> list[Evaluation]:
        from potforge.oracle import OracleFailure

        out = []
        for atoms in frames:
            try:
                label = self.session().compute(atoms)
            except OracleFailure as exc:
                out.append(Evaluation(float("nan"), len(atoms), error=f"{exc.kind}: {exc}"))
                continue
            out.append(Evaluation(label.energy, len(atoms), stress_eV_A3=label.stress))
        return out


class ModelEvaluator(Evaluator):
    """A potforge ensemble. Single points go through :func:`potforge.model.predict_frames` in
    batches (many small cells per call); relaxations use the ASE calculator on the ensemble mean."""

    kind = "model"

    def __init__(self, model, label: str = "model", spec: str | None = None, max_atoms_per_batch: int = 4000) -> None:
        super().__init__(label)
        self.model = model
        self.spec = spec
        self.max_atoms_per_batch = max_atoms_per_batch

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "spec": self.spec,
            "members": self.model.n_members,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "metadata": self.model.metadata,
        }

    def calculator(self, atoms: Atoms, directory: Path | None) -> Calculator:
        from potforge.model import PotforgeCalculator

        return PotforgeCalculator(self.model, dtype=self.model.dtype, uncertainty=False)

    def members(self, frames: Sequence[Atoms]) -> list[np.ndarray | None]:
        from potforge.model import predict_frames

        return [a.info["member_energies"] for a in predict_frames(self.model, list(frames), self.max_atoms_per_batch)]

    def _compute_single_points(self, frames: Sequence[Atoms]) -> list[Evaluation]:
        from potforge.model import predict_frames

        out = []
        for a in predict_frames(self.model, list(frames), self.max_atoms_per_batch):
            stress = a.calc.results.get("stress")
            out.append(
                Evaluation(
                    float(a.calc.results["energy"]),
                    len(a),
                    stress_eV_A3=None if stress is None else np.asarray(stress, dtype=float),
                    member_energies_eV=np.asarray(a.info["member_energies"], dtype=float),
                )
            )
        return out


#: Display names of the published models (``load_model`` specs).
PUBLISHED_LABELS = {"ani-al": "ANI-Al"}


def model_evaluator(model: Any, *, label: str | None = None, dtype=None, workdir: Path | None = None) -> Evaluator:
    """The model side from: an :class:`Evaluator`; an ``ANIEnsemble``; a model spec (file path,
    NeuroChem ``.info``, ``"ani-al"``); ``"oracle:NAME"`` or an ``Oracle`` (a reference method
    standing in for the model, e.g. to check the harness or an EAM potential); or a calculator
    factory ``(atoms, directory) -> Calculator``. ``dtype`` (torch) defaults to float64: elastic
    constants from 0.25 % strains need it."""
    import torch

    from potforge.model import ANIEnsemble, Potential, load_model
    from potforge.oracle import Oracle, get_oracle

    if isinstance(model, Evaluator):
        return model
    if isinstance(model, (ANIEnsemble, Potential)):  # any architecture's ensemble (HIP-NN too)
        return ModelEvaluator(model, label or "model")
    if isinstance(model, Oracle):
        return OracleEvaluator(model, label or model.name.upper(), workdir)
    if isinstance(model, str) and model.startswith("oracle:"):
        return OracleEvaluator(get_oracle(model.removeprefix("oracle:")), label, workdir)
    if isinstance(model, (str, Path)):
        ensemble = load_model(model, dtype=dtype or torch.float64)
        name = label or PUBLISHED_LABELS.get(str(model).lower()) or Path(str(model)).stem
        return ModelEvaluator(ensemble, name, spec=str(model))
    if callable(model):
        return CalculatorEvaluator(model, label or "model", workdir)
    raise PotforgeError(f"cannot use {type(model).__name__} as a model")


def reference_evaluator(reference: Any, *, workdir: Path | None = None, settings: dict | None = None) -> Evaluator:
    """The reference side from: an :class:`Evaluator`, an ``Oracle``, an oracle name (``"emt"``,
    ``"gpaw"``, ``"python:pkg.mod:Class"``) with ``settings``, or a calculator factory. Oracle
    results are cached on disk under ``workdir`` so an interrupted run resumes."""
    from potforge.oracle import Oracle, get_oracle

    if isinstance(reference, Evaluator):
        return reference
    if isinstance(reference, str):
        reference = get_oracle(reference, settings)
    if isinstance(reference, Oracle):
        reference.check()
        return OracleEvaluator(reference, workdir=workdir, persist=workdir is not None)
    if callable(reference):
        return CalculatorEvaluator(reference, "reference", workdir)
    raise PotforgeError(f"cannot use {type(reference).__name__} as a reference")
