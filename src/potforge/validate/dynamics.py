"""Molecular dynamics for the dynamic benchmarks (paper III.D–F): one integrator for both sides.

A :class:`MDState` is one trajectory (positions, velocities, cell, thermostat and barostat
targets, its own random stream). :func:`run_md` advances several states together; forces come
from a :class:`ForceProvider`:

* :class:`ModelForces` evaluates every state in **one** batched call of a potforge ensemble
  (float32 copy of the model, mean forces only), so several temperatures cost little more than one;
* :class:`CalculatorForces` loops over the states with one ASE calculator each (EMT, EAM, any oracle).

Integrator: BAOAB Langevin (Leimkuhler & Matthews 2013) for the atoms and, for constant pressure,
stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020)) once per step,
isotropic (``"iso"``) or per Cartesian axis (``"aniso"``: orthogonal cells, coexistence slabs; ``"z"``:
only the z axis). Atoms flagged ``fixed`` do not move (the solid half while the other half melts).

Units: Å, fs, amu, eV, K; velocities Å/fs; pressures in GPa at the interface, eV/Å³ inside.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms, units

from potforge.validate.core import BenchmarkError, Evaluator, ModelEvaluator, OracleEvaluator

#: (eV/Å)/amu in Å/fs².
ACCEL = float(units.fs**2)
#: amu (Å/fs)² in eV.
MV2_EV = 1.0 / ACCEL
KB = float(units.kB)
#: 1 GPa in eV/Å³.
GPA = float(units.GPa)
#: forces beyond this (eV/Å) mean the trajectory blew up.
MAX_FORCE_EV_A = 100.0

Barostat = Literal["iso", "aniso", "z"]


@dataclass
class MDState:
    """One trajectory. ``temperature_K`` is a number or a function of time (fs); ``pressure_GPa``
    None means constant volume. ``stress`` (3, 3) eV/Å³ is the virial stress (ASE sign, no kinetic
    part) of the current positions; ``energy`` eV."""

    numbers: np.ndarray
    masses: np.ndarray  # (N,) amu
    positions: np.ndarray  # (N, 3) Å
    velocities: np.ndarray  # (N, 3) Å/fs
    cell: np.ndarray  # (3, 3) Å, rows are lattice vectors
    temperature_K: float | Callable[[float], float]
    rng: np.random.Generator
    pressure_GPa: float | None = None
    barostat: Barostat = "iso"
    fixed: np.ndarray | None = None  # (N,) bool
    label: str = ""
    t_fs: float = 0.0
    energy: float = math.nan
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    def target_T(self, t_fs: float | None = None) -> float:
        t = self.t_fs if t_fs is None else t_fs
        return float(self.temperature_K(t)) if callable(self.temperature_K) else float(self.temperature_K)

    def kinetic_tensor(self) -> np.ndarray:
        """Σ m v vᵀ (3, 3) in eV."""
        mv = self.masses[:, None] * self.velocities
        return mv.T @ self.velocities * MV2_EV

    def temperature(self) -> float:
        """Instantaneous kinetic temperature (K) over the moving atoms."""
        n = self.n_atoms - (0 if self.fixed is None else int(self.fixed.sum()))
        return float(np.trace(self.kinetic_tensor())) / (3 * max(n, 1) * KB)

    def pressure_tensor(self) -> np.ndarray:
        """Instantaneous pressure tensor (3, 3) eV/Å³: kinetic + virial."""
        return self.kinetic_tensor() / self.volume - self.stress

    def pressure_GPa_now(self) -> float:
        return float(np.trace(self.pressure_tensor())) / 3 / GPA

    def density_g_cm3(self) -> float:
        return float(self.masses.sum()) * 1.66053906660 / self.volume

    def to_atoms(self, with_velocities: bool = False) -> Atoms:
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)
        if with_velocities:
            atoms.set_velocities(self.velocities / units.fs)  # ASE velocity unit: Å/(ASE time)
        atoms.wrap()
        return atoms


def new_state(
    atoms: Atoms,
    temperature_K: float | Callable[[float], float],
    seed: int | Sequence[int],
    *,
    pressure_GPa: float | None = None,
    barostat: Barostat = "iso",
    fixed: np.ndarray | None = None,
    label: str = "",
) -> MDState:
    """A state starting from ``atoms`` with Maxwell–Boltzmann velocities at T(0), no drift."""
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses().astype(float)
    state = MDState(
        numbers=atoms.numbers.copy(),
        masses=masses,
        positions=atoms.positions.astype(float).copy(),
        velocities=np.zeros((len(atoms), 3)),
        cell=atoms.cell.array.astype(float).copy(),
        temperature_K=temperature_K,
        rng=rng,
        pressure_GPa=pressure_GPa,
        barostat=barostat,
        fixed=None if fixed is None else np.asarray(fixed, dtype=bool),
        label=label,
    )
    thermalize(state, state.target_T(0.0))
    return state


def clone_state(st: MDState, temperature_K: float | Callable[[float], float], seed: int | Sequence[int], **changes):
    """A copy of ``st`` (positions, velocities, cell, forces) with a new target temperature and
    random stream; ``changes`` set other fields (pressure_GPa, barostat, fixed, label)."""
    new = copy.copy(st)
    new.positions, new.velocities, new.cell = st.positions.copy(), st.velocities.copy(), st.cell.copy()
    new.fixed = None if st.fixed is None else st.fixed.copy()
    new.temperature_K, new.rng, new.info, new.forces = temperature_K, np.random.default_rng(seed), {}, None
    for k, v in changes.items():
        setattr(new, k, v)
    return new


def thermalize(state: MDState, temperature_K: float) -> None:
    """Fresh Maxwell–Boltzmann velocities at ``temperature_K`` (fixed atoms at rest, no drift)."""
    sigma = np.sqrt(KB * temperature_K / state.masses * ACCEL)
    v = state.rng.standard_normal((state.n_atoms, 3)) * sigma[:, None]
    v -= (state.masses[:, None] * v).sum(0) / state.masses.sum()
    if state.fixed is not None:
        v[state.fixed] = 0.0
    state.velocities = v


# --- forces ------------------------------------------------------------------------------------
class ForceProvider:
    """Fills ``energy``, ``forces`` and ``stress`` of every state."""

    batched = False

    def __call__(self, states: Sequence[MDState]) -> None:
        raise NotImplementedError


class ModelForces(ForceProvider):
    """A potforge ensemble, all states in one call. The model is copied to float32 (MD does not
    need float64; the evaluator's float64 model is left alone) and evaluated for mean forces only."""

    batched = True

    def __init__(self, model) -> None:
        import torch

        self.model = copy.deepcopy(model).to(torch.float32)

    def __call__(self, states: Sequence[MDState]) -> None:
        import torch

        from potforge.model.neighbors import AtomsBatch

        m = self.model
        counts = torch.tensor([s.n_atoms for s in states])
        symbols = [sym for s in states for sym in Atoms(numbers=s.numbers).get_chemical_symbols()]
        batch = AtomsBatch(
            positions=torch.tensor(np.concatenate([s.positions for s in states]), dtype=m.dtype),
            species=m.species_index(symbols),
            system=torch.repeat_interleave(torch.arange(len(states)), counts),
            cells=torch.tensor(np.stack([s.cell for s in states]), dtype=m.dtype),
            pbc=torch.ones(len(states), 3, dtype=torch.bool),
        )
        pred = m.evaluate(batch, forces=True, stress=True)
        forces = pred.forces.double().numpy()
        offset = 0
        for k, s in enumerate(states):
            s.energy = float(pred.energy[k])
            s.forces = forces[offset : offset + s.n_atoms]
            s.stress = pred.stress[k].double().numpy()
            offset += s.n_atoms


class CalculatorForces(ForceProvider):
    """One ASE calculator per state from ``factory(atoms, directory)`` (kept for the whole run, so
    calculators that reuse neighbour lists stay fast)."""

    def __init__(self, factory: Callable[[Atoms, Path], object], workdir: Path | None = None) -> None:
        import tempfile

        self.factory = factory
        # calculators may create their folder: never the current directory
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="potforge-md-")
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)
        self._calcs: dict[int, tuple[Atoms, object]] = {}

    def __call__(self, states: Sequence[MDState]) -> None:
        from ase.calculators.calculator import all_changes

        for s in states:
            entry = self._calcs.get(id(s))
            if entry is None or len(entry[0]) != s.n_atoms:
                atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=True)
                directory = self.workdir / f"md-{len(self._calcs)}"
                entry = (atoms, self.factory(atoms, directory))
                self._calcs[id(s)] = entry
            atoms, calc = entry
            atoms.set_cell(s.cell, scale_atoms=False)
            atoms.positions = s.positions
            # only what changed, so EMT-like calculators keep their neighbour list between steps
            changes = all_changes if getattr(calc, "atoms", None) is None else calc.check_state(atoms)
            calc.calculate(atoms, ["energy", "forces", "stress"], changes)
            s.energy = float(calc.results["energy"])
            s.forces = np.asarray(calc.results["forces"], dtype=float)
            stress = np.asarray(calc.results["stress"], dtype=float)
            if stress.shape == (6,):
                xx, yy, zz, yz, xz, xy = stress
                stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            s.stress = stress


def md_forces(evaluator: Evaluator, workdir: Path | None = None) -> ForceProvider:
    """The force provider of one side: batched for potforge models, else its calculators."""
    if isinstance(evaluator, ModelEvaluator):
        cached = evaluator.memo.get("md_forces")
        if cached is None:
            cached = evaluator.memo["md_forces"] = ModelForces(evaluator.model)
        return cached
    if workdir is None and evaluator.workdir is not None:
        workdir = evaluator.workdir / "md"
    return CalculatorForces(evaluator.calculator, workdir)


def md_is_cheap(evaluator: Evaluator, policy: str) -> bool:
    """Whether to run MD with ``evaluator`` as the reference: ``policy`` 'always', 'never' or
    'auto' (EMT, EAM, plain calculators and models: yes; DFT oracles: no)."""
    if policy in ("always", "never"):
        return policy == "always"
    if isinstance(evaluator, OracleEvaluator):
        return evaluator.oracle.name in ("emt", "eam")
    return True


# --- integrator --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Integrator:
    """Time step (fs), Langevin relaxation time of the atoms (fs), barostat relaxation time (fs)
    and the compressibility guess (1/GPa) that sets the barostat's response."""

    timestep_fs: float = 1.0
    thermostat_tau_fs: float = 100.0
    barostat_tau_fs: float = 1000.0
    compressibility_per_GPa: float = 1.0 / 50.0
    barostat_every: int = 10  # steps between cell rescalings (each a rebuild of neighbour lists)


def run_md(
    states: Sequence[MDState],
    forces: ForceProvider,
    n_steps: int,
    integrator: Integrator,
    *,
    every: int = 0,
    callback: Callable[[int, list[MDState]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Advance ``states`` by ``n_steps`` steps; ``callback(step, states)`` after every ``every``
    steps (and at the end when ``every`` divides n_steps). Raises :class:`BenchmarkError` when a
    trajectory blows up (non-finite or huge forces)."""
    states = list(states)
    if not states:
        return
    dt = integrator.timestep_fs
    c1 = math.exp(-dt / integrator.thermostat_tau_fs)
    if any(s.forces is None for s in states):
        _compute(forces, states)
    for step in range(1, n_steps + 1):
        for s in states:
            moving = _moving(s)
            s.velocities += 0.5 * dt * ACCEL * s.forces / s.masses[:, None] * moving
            s.positions += 0.5 * dt * s.velocities
            temp = max(s.target_T(s.t_fs + 0.5 * dt), 0.0)
            sigma = np.sqrt((1 - c1 * c1) * KB * temp / s.masses * ACCEL)
            s.velocities = (c1 * s.velocities + sigma[:, None] * s.rng.standard_normal(s.velocities.shape)) * moving
            s.positions += 0.5 * dt * s.velocities
            s.t_fs += dt
        _compute(forces, states)
        for s in states:
            s.velocities += 0.5 * dt * ACCEL * s.forces / s.masses[:, None] * _moving(s)
            if s.pressure_GPa is not None and step % integrator.barostat_every == 0:
                _rescale_cell(s, integrator, integrator.barostat_every * dt)
        if progress is not None:
            progress(1)
        if callback is not None and every and step % every == 0:
            callback(step, states)


def _moving(s: MDState) -> np.ndarray | float:
    return 1.0 if s.fixed is None else (~s.fixed)[:, None].astype(float)


def _compute(forces: ForceProvider, states: list[MDState]) -> None:
    forces(states)
    for s in states:
        fmax = float(np.abs(s.forces).max()) if s.forces.size else 0.0
        if not math.isfinite(fmax) or not math.isfinite(s.energy) or fmax > MAX_FORCE_EV_A:
            raise BenchmarkError(
                f"MD of {s.label or 'a system'} became unstable at t = {s.t_fs:.0f} fs "
                f"(T = {s.temperature():.0f} K, max |F| = {fmax:.3g} eV/Å)"
            )
        s.positions = _wrap(s.positions, s.cell)


def _wrap(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    frac = np.linalg.solve(cell.T, positions.T).T
    return (frac - np.floor(frac)) @ cell


def _rescale_cell(s: MDState, integ: Integrator, dt: float) -> None:
    """One step (of length ``dt`` fs) of stochastic cell rescaling: ε = ln V (iso) or ln(length)
    per axis, dε = (β/τ)(P − P0 + kT/V) dt + sqrt(2 kT β dt / (V τ)) ξ."""
    tau = integ.barostat_tau_fs
    beta = integ.compressibility_per_GPa / GPA  # Å³/eV
    temp = max(s.target_T(), 1.0)
    vol = s.volume
    p0 = s.pressure_GPa * GPA
    ptens = s.pressure_tensor()
    kt_v = KB * temp / vol
    if s.barostat == "iso":
        d_lnv = beta / tau * (np.trace(ptens) / 3 - p0 + kt_v) * dt
        d_lnv += math.sqrt(2 * KB * temp * beta * dt / (vol * tau)) * s.rng.standard_normal()
        scale = np.full(3, math.exp(d_lnv / 3))
    else:
        axes = [0, 1, 2] if s.barostat == "aniso" else [2]
        scale = np.ones(3)
        for a in axes:
            d = beta / (3 * tau) * (ptens[a, a] - p0 + kt_v) * dt
            d += math.sqrt(2 * KB * temp * beta * dt / (3 * vol * tau)) * s.rng.standard_normal()
            scale[a] = math.exp(d)
    # scale along Cartesian axes: positions and cell rows alike (affine), velocities inversely
    s.cell = s.cell * scale[None, :]
    if s.fixed is None:
        s.positions = s.positions * scale[None, :]
    else:  # held atoms (a crystal block) keep their positions: only the moving part is strained
        s.positions[~s.fixed] *= scale[None, :]
    s.velocities = s.velocities / scale[None, :] * _moving(s)


# --- analysis ----------------------------------------------------------------------------------
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


def cna_types(atoms: Atoms) -> np.ndarray:
    """Adaptive common neighbour analysis (OVITO, Stukowski 2012) of every atom: (N,) indices into
    :data:`CNA_NAMES` (0 other, 1 fcc, 2 hcp, 3 bcc, 4 icosahedral)."""
    try:
        from ovito.io.ase import ase_to_ovito
        from ovito.modifiers import CommonNeighborAnalysisModifier
        from ovito.pipeline import Pipeline, StaticSource
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise BenchmarkError(
            f"common neighbour analysis needs OVITO's Python module (pip install ovito): {exc}"
        ) from None
    pipeline = Pipeline(source=StaticSource(data=ase_to_ovito(atoms)))
    pipeline.modifiers.append(CommonNeighborAnalysisModifier(mode=CommonNeighborAnalysisModifier.Mode.AdaptiveCutoff))
    return np.asarray(pipeline.compute().particles["Structure Type"][...], dtype=int)


def structure_fractions(atoms: Atoms) -> dict[str, float]:
    """Fraction of atoms of each CNA structure (keys of :data:`CNA_NAMES`)."""
    counts = np.bincount(cna_types(atoms), minlength=len(CNA_NAMES))[: len(CNA_NAMES)]
    return {name: float(c) / len(atoms) for name, c in zip(CNA_NAMES, counts, strict=True)}


def crystalline_fraction(atoms: Atoms) -> float:
    """Fraction of atoms in a close-packed crystalline environment (fcc or hcp)."""
    f = structure_fractions(atoms)
    return f["fcc"] + f["hcp"]


def solid_fraction_of(state: MDState, mask: np.ndarray | None = None) -> float:
    """Fraction of the atoms (all, or those in ``mask``) that CNA calls crystalline (fcc, hcp, bcc)."""
    types = cna_types(state.to_atoms())
    crystalline = np.isin(types, (1, 2, 3))
    return float(crystalline.mean() if mask is None else crystalline[mask].mean())


def fcc_supercell(element: str, a_A: float, reps: tuple[int, int, int]) -> Atoms:
    """Conventional cubic fcc cell repeated ``reps`` times (4·nx·ny·nz atoms)."""
    from ase.build import bulk

    return bulk(element, "fcc", a=a_A, cubic=True).repeat(reps)


# --- single points with forces -----------------------------------------------------------------
@dataclass
class Labels:
    """Energy (eV), forces (N, 3) eV/Å and virial stress (6,) eV/Å³ (Voigt, ASE sign) of a frame."""

    energy_eV: float
    forces_eV_A: np.ndarray
    stress_eV_A3: np.ndarray


def label_frames(side: Evaluator, frames: Sequence[Atoms]) -> list[Labels]:
    """Energies, forces and stress of ``frames`` by one side: batched for models; an oracle's own
    labelling otherwise, cached on disk under the side's workdir (``labels/``) when it has one, so
    an interrupted run with an expensive reference resumes."""
    import json

    from potforge.validate.core import structure_key

    if isinstance(side, ModelEvaluator):
        from potforge.model import predict_frames

        out = []
        for a in predict_frames(side.model, list(frames), side.max_atoms_per_batch):
            r = a.calc.results
            out.append(Labels(float(r["energy"]), np.asarray(r["forces"], float), np.asarray(r["stress"], float)))
        return out
    import tempfile

    cache = None if side.workdir is None else side.workdir / "labels"
    scratch = tempfile.TemporaryDirectory(prefix="potforge-labels-") if side.workdir is None else None
    base = side.workdir if side.workdir is not None else Path(scratch.name)
    out = []
    for atoms in frames:
        key = structure_key(atoms, "label")
        path = None if cache is None else cache / f"{key}.json"
        if path is not None and path.is_file():
            d = json.loads(path.read_text())
            out.append(Labels(d["energy"], np.asarray(d["forces"]), np.asarray(d["stress"])))
            continue
        if isinstance(side, OracleEvaluator):
            directory = base / f"label-{key[:12]}"
            try:
                lab = side.oracle.compute(atoms, directory)
            except Exception as exc:
                raise BenchmarkError(f"{side.label}: single point failed: {exc}") from None
            labels = Labels(lab.energy, np.asarray(lab.forces), np.asarray(lab.stress))
        else:
            work = atoms.copy()
            work.calc = side.calculator(work, base / f"label-{key[:12]}")
            labels = Labels(float(work.get_potential_energy()), work.get_forces(), work.get_stress(voigt=True))
        side.n_calculations += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"energy": labels.energy_eV, "forces": labels.forces_eV_A.tolist(),
                                       "stress": labels.stress_eV_A3.tolist()}))  # fmt: skip
            tmp.replace(path)
        out.append(labels)
    if scratch is not None:
        scratch.cleanup()
    return out
