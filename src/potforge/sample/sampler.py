"""Uncertainty-driven sampling (paper II.B): many replicas of Langevin MD from random disordered
cells, each stopped alone when the ensemble disagrees, its slot refilled with a fresh cell.

Outputs, all under ``out_dir`` and all crash-safe:
* ``flagged/<traj>.json`` — every stopped replica's frame (uncertain, or the last sane frame of
  an unstable one) with its provenance, written atomically the moment it is found;
* ``state.pt`` — the sampler's full state (replicas, random streams, counters), written every
  ``checkpoint_every_s``; a restarted sampler continues from it exactly;
* ``summary.json`` — outcomes of every trajectory (time to flag, reason) when the stage ends.

Trajectory k of generation g draws its cell, schedules and noise from seed (seed, g, k), so a
run is reproducible and independent of how many replicas run side by side.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from potforge.model.ensemble import ANIEnsemble, Prediction
from potforge.oracle.runner import write_json_atomic
from potforge.sample.config import SamplerConfig
from potforge.sample.md import Replica, drift_and_kick, evaluate, final_kick, new_replica
from potforge.sample.schedule import StrainSchedule, TemperatureSchedule
from potforge.structures import RandomCellSpec, random_cell

STATE_FILE = "state.pt"
SUMMARY_FILE = "summary.json"


@dataclass
class SamplingResult:
    flagged: int
    outcomes: list[dict]
    total_steps: int
    walltime_s: float
    stop_reason: str

    def times_to_flag_fs(self) -> list[float]:
        """Simulated time of every finished trajectory (survivors count with their full length)."""
        return [o["time_fs"] for o in self.outcomes if o["outcome"] in ("flagged", "survived", "unstable")]


def uncertainty_measures(pred: Prediction, replicas: list[Replica]) -> list[dict[str, float]]:
    """ρ = σ_E/√N (eV/√atom), mean and max per-atom force spread (eV/Å), per replica."""
    out = []
    offset = 0
    force_std, energy_std = pred.force_std.cpu(), pred.energy_std.cpu()  # one copy from a GPU
    for k, r in enumerate(replicas):
        fs = force_std[offset : offset + r.n_atoms]
        out.append(
            {
                "energy_eV_per_sqrt_atom": float(energy_std[k]) / math.sqrt(r.n_atoms),
                "force_mean_eV_per_A": float(fs.mean()),
                "force_max_eV_per_A": float(fs.max()),
            }
        )
        offset += r.n_atoms
    return out


def exceeded(measures: dict[str, float], config: SamplerConfig) -> list[str]:
    u = config.uncertainty
    limits = {
        "energy_eV_per_sqrt_atom": u.energy_eV_per_sqrt_atom,
        "force_mean_eV_per_A": u.force_mean_eV_per_A,
        "force_max_eV_per_A": u.force_max_eV_per_A,
    }
    return [k for k, lim in limits.items() if lim is not None and measures[k] > lim]


def _min_distance(replica: Replica) -> float:
    from potforge.model.neighbors import AtomsBatch, build_graph

    batch = AtomsBatch(
        replica.positions.double(),
        replica.species,
        torch.zeros(replica.n_atoms, dtype=torch.long),
        replica.cell.double()[None],
        torch.ones(1, 3, dtype=torch.bool),
    )
    try:
        graph = build_graph(batch, 2.0, 1, min_distance=0.0)
    except Exception:
        return 0.0
    if graph.n_edges == 0:
        return math.inf
    return float(graph.edge_vectors(batch.positions, batch.cells).norm(dim=1).min())


def instability(replica: Replica, config: SamplerConfig) -> str | None:
    """Why a replica must stop as unstable, or None."""
    if not (torch.isfinite(replica.positions).all() and torch.isfinite(replica.velocities).all()):
        return "non-finite positions or velocities"
    s = config.stability
    temp = replica.temperature_K()
    limit = max(s.max_temperature_factor * replica.schedule(replica.t_fs), s.max_temperature_K)
    if temp > limit:
        return f"runaway temperature {temp:.0f} K"
    dmin = _min_distance(replica)
    if dmin < s.min_distance_A:
        return f"atoms {dmin:.2f} Å apart"
    return None


class Sampler:
    """The replica manager. ``cell_spec`` gives the random starting cells."""

    def __init__(
        self,
        model: ANIEnsemble,
        config: SamplerConfig,
        cell_spec: RandomCellSpec,
        out_dir: str | Path,
        seed: int,
        generation: int,
    ) -> None:
        self.model = model
        self.config = config
        self.cell_spec = cell_spec
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.generation = generation
        self.replicas: list[Replica] = []
        self.next_traj = 0
        self.total_steps = 0
        self.flagged = 0
        self.outcomes: list[dict] = []
        self.walltime_s = 0.0

    # --- replicas ------------------------------------------------------------------------
    def _spawn(self) -> Replica:
        k = self.next_traj
        self.next_traj += 1
        rng = np.random.default_rng([self.seed, self.generation, k])
        atoms = random_cell(self.cell_spec, rng)
        schedule = TemperatureSchedule.draw(self.config.schedule, rng)
        strain = StrainSchedule.draw(self.config.strain, rng)
        replica = new_replica(
            f"g{self.generation:03d}-t{k:05d}", atoms, self.model, schedule, strain, (self.seed, self.generation, k, 1)
        )
        replica.last_sane = (replica.positions.clone(), replica.cell.clone(), 0.0)
        return replica

    def _fill(self) -> None:
        fresh = []
        while len(self.replicas) < self.config.replicas:
            r = self._spawn()
            self.replicas.append(r)
            fresh.append(r)
        if fresh:
            evaluate(self.model, fresh, members=False)

    def _stop(self, replica: Replica, outcome: str, reason: str, measures: dict | None, record_frame: bool) -> None:
        record = {
            "traj": replica.traj_id,
            "outcome": outcome,
            "reason": reason,
            "time_fs": replica.t_fs if outcome != "unstable" else (replica.last_sane[2] if replica.last_sane else 0.0),
            "steps": replica.steps,
            "n_atoms": replica.n_atoms,
            "uncertainty": measures or {},
        }
        if record_frame:
            atoms = replica.to_atoms(sane=outcome == "unstable")
            payload = {
                "traj": replica.traj_id,
                "generation": self.generation,
                "outcome": outcome,
                "reason": reason,
                "sim_time_fs": record["time_fs"],
                "numbers": atoms.numbers.tolist(),
                "positions": atoms.positions.tolist(),
                "cell": atoms.cell.array.tolist(),
                "uncertainty": measures or {},
                "schedule": replica.schedule.as_dict(),
                "strain": replica.strain.as_dict() if replica.strain else None,
                "target_temperature_K": replica.schedule(record["time_fs"]),
            }
            (self.out_dir / "flagged").mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out_dir / "flagged" / f"{replica.traj_id}.json", payload)
            self.flagged += 1
        self.outcomes.append(record)
        self.replicas.remove(replica)

    # --- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        reps = []
        for r in self.replicas:
            reps.append(
                {
                    "traj_id": r.traj_id,
                    "numbers": torch.tensor(r.numbers),
                    "positions": r.positions,
                    "velocities": r.velocities,
                    "cell0": r.cell0,
                    "cell": r.cell,
                    "forces": r.forces,
                    "t_fs": r.t_fs,
                    "steps": r.steps,
                    "rng": r.rng.get_state(),
                    "schedule": json.dumps(r.schedule.as_dict()),
                    "strain": json.dumps(r.strain.as_dict() if r.strain else None),
                    "last_sane": [*r.last_sane[:2], torch.tensor(r.last_sane[2])] if r.last_sane else [],
                }
            )
        return {
            "replicas": reps,
            "next_traj": self.next_traj,
            "total_steps": self.total_steps,
            "flagged": self.flagged,
            "outcomes": json.dumps(self.outcomes),
            "walltime_s": self.walltime_s,
        }

    def load_state_dict(self, state: dict) -> None:
        from ase import Atoms

        self.replicas = []
        for d in state["replicas"]:
            schedule = TemperatureSchedule(**json.loads(d["schedule"]))
            strain_d = json.loads(d["strain"])
            strain = None
            if strain_d:
                strain_d["shear_axes"] = tuple(strain_d["shear_axes"])
                strain = StrainSchedule(**strain_d)
            atoms = Atoms(
                numbers=d["numbers"].numpy(),
                positions=d["positions"].double().numpy(),
                cell=d["cell"].double().numpy(),
                pbc=True,
            )
            r = new_replica(d["traj_id"], atoms, self.model, schedule, strain, (0,))
            r.positions, r.velocities, r.cell0, r.cell = d["positions"], d["velocities"], d["cell0"], d["cell"]
            r.forces, r.t_fs, r.steps = d["forces"], float(d["t_fs"]), int(d["steps"])
            r.rng.set_state(d["rng"])
            if d["last_sane"]:
                r.last_sane = (d["last_sane"][0], d["last_sane"][1], float(d["last_sane"][2]))
            self.replicas.append(r)
        self.next_traj = int(state["next_traj"])
        self.total_steps = int(state["total_steps"])
        self.flagged = int(state["flagged"])
        self.outcomes = json.loads(state["outcomes"])
        self.walltime_s = float(state["walltime_s"])

    def save(self) -> None:
        path = self.out_dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    # --- the loop ------------------------------------------------------------------------
    def run(self, progress: Callable[[dict], None] | None = None) -> SamplingResult:
        """Sample until ``max_flagged`` frames, ``max_steps`` or ``max_walltime_s``."""
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.out_dir / STATE_FILE
        if state_path.exists():
            self.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
        start = time.time() - self.walltime_s
        last_save = time.time()
        stop_reason = ""
        while True:
            if self.flagged >= cfg.max_flagged:
                stop_reason = "flagged frames"
                break
            if self.total_steps >= cfg.max_steps:
                stop_reason = "step budget"
                break
            if cfg.max_walltime_s is not None and time.time() - start > cfg.max_walltime_s:
                stop_reason = "wall-time budget"
                break
            self._fill()
            drift_and_kick(self.replicas, cfg.timestep_fs, cfg.friction_per_fs)
            # each replica is checked on its own clock (every check_every of its steps), so its
            # path never depends on its neighbours; only the checked ones need member forces
            due = [r for r in self.replicas if r.steps % cfg.uncertainty.check_every == 0]
            rest = [r for r in self.replicas if r.steps % cfg.uncertainty.check_every != 0]
            pred_rest = evaluate(self.model, rest, members=False) if rest else None
            pred_due = evaluate(self.model, due, members=True) if due else None
            final_kick(self.replicas, cfg.timestep_fs)
            self.total_steps += len(self.replicas)
            if pred_rest is not None:
                for k in torch.nonzero(~torch.isfinite(pred_rest.member_energies).all(0)).flatten().tolist():
                    self._stop(rest[k], "unstable", "non-finite energy", None, record_frame=True)
            if pred_due is not None:
                measures = uncertainty_measures(pred_due, due)
                finite = torch.isfinite(pred_due.member_energies).all(0).cpu()
                for k, r in enumerate(due):
                    if not bool(finite[k]):
                        self._stop(r, "unstable", "non-finite energy", None, record_frame=True)
                        continue
                    bad = instability(r, cfg)
                    if bad:
                        self._stop(r, "unstable", bad, measures[k], record_frame=True)
                        continue
                    over = exceeded(measures[k], cfg)
                    if over:
                        self._stop(r, "flagged", ", ".join(over), measures[k], record_frame=True)
                        continue
                    r.last_sane = (r.positions.clone(), r.cell.clone(), r.t_fs)
                    if r.t_fs >= r.schedule.t_max_fs:
                        self._stop(r, "survived", "reached t_max", measures[k], record_frame=False)
            self.walltime_s = time.time() - start
            if time.time() - last_save > cfg.checkpoint_every_s:
                self.save()
                last_save = time.time()
            if progress:
                progress(self.status())
        # replicas still running are censored at their current time
        for r in self.replicas:
            self.outcomes.append(
                {
                    "traj": r.traj_id,
                    "outcome": "running",
                    "reason": stop_reason,
                    "time_fs": r.t_fs,
                    "steps": r.steps,
                    "n_atoms": r.n_atoms,
                    "uncertainty": {},
                }
            )
        self.replicas = []
        result = SamplingResult(self.flagged, self.outcomes, self.total_steps, self.walltime_s, stop_reason)
        summary = {
            "flagged": self.flagged,
            "total_steps": self.total_steps,
            "walltime_s": self.walltime_s,
            "stop_reason": stop_reason,
            "median_time_to_flag_fs": median_time_to_flag(self.outcomes),
            "outcomes": self.outcomes,
        }
        write_json_atomic(self.out_dir / SUMMARY_FILE, summary)
        self.save()
        return result

    def status(self) -> dict:
        return {
            "replicas": len(self.replicas),
            "flagged": self.flagged,
            "total_steps": self.total_steps,
            "median_time_to_flag_fs": median_time_to_flag(self.outcomes),
            "walltime_s": self.walltime_s,
        }


def median_time_to_flag(outcomes: list[dict]) -> float | None:
    """Median simulated time of finished trajectories (survivors count with their full length;
    trajectories cut short by the budget count with their time so far, a lower bound)."""
    times = [o["time_fs"] for o in outcomes]
    return float(np.median(times)) if times else None
